package payload

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// sbinTool finds an administration tool that may not be on a user's PATH.
func sbinTool(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// makeSDImage writes an SD card image of mib MiB laid out as nixpkgs does: an
// MBR, a FAT32 firmware partition at 8 MiB and an ext4 root partition, with
// real file systems when sfdisk, mkfs.vfat and mkfs.ext4 are installed (it
// says which it made). Most of it is zeros; fill MiB of random data follow
// the root partition's start.
func makeSDImage(t testing.TB, path string, mib, fill int) {
	t.Helper()
	const m = 1 << 20
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(mib) * m); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sfdisk, ok1 := sbinTool("sfdisk")
	vfat, ok2 := sbinTool("mkfs.vfat")
	ext4, ok3 := sbinTool("mkfs.ext4")
	fwStart, fwMiB, rootStart := 8, 34, 42
	if ok1 && ok2 && ok3 && mib >= 56 {
		table := "label: dos\n\nstart=" + strconv.Itoa(fwStart*2048) + ", size=" + strconv.Itoa(fwMiB*2048) + ", type=b\nstart=" + strconv.Itoa(rootStart*2048) + ", type=83, bootable\n"
		runTool(t, table, sfdisk, "--quiet", "--no-reread", "--no-tell-kernel", path)
		runTool(t, "", vfat, "-F", "32", "-s", "1", "-n", "FIRMWARE", "--offset", strconv.Itoa(fwStart*2048), path, strconv.Itoa(fwMiB*1024))
		runTool(t, "", ext4, "-F", "-q", "-L", "NIXOS_SD", "-E", "offset="+strconv.Itoa(rootStart*m), path, strconv.Itoa((mib-rootStart)*1024)+"k")
	} else {
		t.Logf("sfdisk/mkfs.vfat/mkfs.ext4 not found or image too small: writing the MBR by hand")
		if mib < 4 {
			t.Fatalf("makeSDImage: %d MiB is too small", mib)
		}
		fwStart, fwMiB, rootStart = 1, 1, 2
		writeMBR(t, path, [][3]uint32{{0x0c, uint32(fwStart * 2048), uint32(fwMiB * 2048)}, {0x83, uint32(rootStart * 2048), uint32((mib - rootStart) * 2048)}})
	}
	if fill > 0 {
		data := make([]byte, fill*m)
		rand.New(rand.NewSource(int64(mib))).Read(data)
		// Half random, half text-like, so that it compresses somewhat.
		for i := len(data) / 2; i < len(data); i++ {
			data[i] = "0123"[data[i]&3]
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		off := int64(rootStart+1) * m
		if off+int64(len(data)) > int64(mib)*m {
			t.Fatalf("makeSDImage: %d MiB of data do not fit", fill)
		}
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// writeMBR writes an MBR with the given partitions (type, start, sectors).
func writeMBR(t testing.TB, path string, parts [][3]uint32) {
	t.Helper()
	sector := mbr(parts...)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(sector, 0); err != nil {
		t.Fatal(err)
	}
}

func runTool(t testing.TB, stdin string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewBufferString(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// zstdFile compresses src into dst.
func zstdFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.ReadFrom(in); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// allocated is how many bytes of a file are allocated on disk.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscallStat
	if err := statFile(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
