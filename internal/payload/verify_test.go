package payload

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mbr is a first sector with the given partitions (type, start, sectors).
func mbr(parts ...[3]uint32) []byte {
	s := make([]byte, 512)
	for i, p := range parts {
		e := s[446+16*i:]
		e[4] = byte(p[0])
		binary.LittleEndian.PutUint32(e[8:], p[1])
		binary.LittleEndian.PutUint32(e[12:], p[2])
	}
	s[510], s[511] = 0x55, 0xaa
	return s
}

func TestCheckMBR(t *testing.T) {
	good := mbr([3]uint32{0x0b, 16384, 61440}, [3]uint32{0x83, 77824, 100000})
	if err := checkMBR(good); err != nil {
		t.Fatalf("a NixOS-like table was rejected: %v", err)
	}
	for _, fat := range []uint32{0x0c, 0x0e} {
		if err := checkMBR(mbr([3]uint32{fat, 2048, 2048}, [3]uint32{0x83, 4096, 4096})); err != nil {
			t.Errorf("FAT type %#x rejected: %v", fat, err)
		}
	}
	noSig := append([]byte(nil), good...)
	noSig[511] = 0
	gpt := mbr([3]uint32{0xee, 1, 1 << 20})
	cases := map[string]struct {
		sector []byte
		want   string
	}{
		"no signature":     {noSig, "no MBR partition table"},
		"short":            {good[:100], "shorter than one sector"},
		"no FAT":           {mbr([3]uint32{0x83, 2048, 2048}), "no FAT firmware partition"},
		"no Linux":         {mbr([3]uint32{0x0c, 2048, 2048}), "no Linux root partition"},
		"protective GPT":   {gpt, "neither a FAT"},
		"empty partitions": {mbr([3]uint32{0x0c, 2048, 0}, [3]uint32{0x83, 4096, 4096}), "no FAT"},
		"random":           {bytes.Repeat([]byte{0x5a}, 512), "no MBR"},
	}
	for name, tc := range cases {
		err := checkMBR(tc.sector)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestCheckImageFileReadsThroughZstd(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "sd.img")
	makeSDImage(t, img, 64, 0)
	if err := checkImageFile(img, false); err != nil {
		t.Fatalf("real image rejected: %v", err)
	}
	zstdFile(t, img, img+".zst")
	if err := checkImageFile(img+".zst", true); err != nil {
		t.Fatalf("compressed real image rejected: %v", err)
	}
	if err := checkImageFile(img+".zst", false); err == nil {
		t.Fatal("a .zst read as a plain image was accepted")
	}
}

// corruptRange flips one byte of the range starting at offset.
func corruptRange(offset int64) func(string, io.Writer) io.Writer {
	marker := " skip=" + strconv.FormatInt(offset, 10) + " "
	return func(cmd string, w io.Writer) io.Writer {
		if !strings.HasPrefix(cmd, "dd ") || !strings.Contains(cmd, marker) {
			return w
		}
		return &flipper{w: w, at: 100}
	}
}

type flipper struct {
	w    io.Writer
	at   int
	seen int
}

func (f *flipper) Write(p []byte) (int, error) {
	if f.at >= f.seen && f.at < f.seen+len(p) {
		q := append([]byte(nil), p...)
		q[f.at-f.seen] ^= 0xff
		p = q
	}
	f.seen += len(p)
	return f.w.Write(p)
}

func TestRunCatchesCorruptedRange(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	e.comm.Stdout = corruptRange(1 << 20)
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("want a verify error about the SHA-256, got %v", err)
	}
	e.outputHolds()
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory was left after a failure: %v", err)
	}
}

func TestRunCatchesImageChangedAfterChecksum(t *testing.T) {
	// The host's sha256sum describes another file than the one sent: as if
	// the image changed between its checksum and its download.
	e := newRunEnv(t)
	e.publish(true)
	other := filepath.Join(e.dir, "other")
	os.WriteFile(other, []byte("something else"), 0o644)
	os.WriteFile(filepath.Join(e.dir, "bin", "sha256sum"), []byte("#!/bin/bash\n[ $# -gt 0 ] || exec /usr/bin/sha256sum\nsum=$(/usr/bin/sha256sum "+other+")\necho \"${sum%% *}  $1\"\n"), 0o755)
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "the image changed") {
		t.Fatalf("want a verify error, got %v", err)
	}
	e.outputHolds()
}

func TestRunRejectsNonImage(t *testing.T) {
	e := newRunEnv(t)
	junk := filepath.Join(e.dir, "junk.img")
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	os.WriteFile(junk, b, 0o644)
	zstdFile(t, junk, filepath.Join(e.store, "sd-image", testImageName+".zst"))
	_, err := e.run(context.Background(), e.config(nil))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "not an SD card image") {
		t.Fatalf("want a verify error, got %v", err)
	}
	e.outputHolds()
}

func TestCPULimitNote(t *testing.T) {
	for _, tc := range []struct {
		after, download time.Duration
		want            bool
	}{
		{1500 * time.Millisecond, 1400 * time.Millisecond, true},
		{1200 * time.Millisecond, 3 * time.Second, true},
		{900 * time.Millisecond, 500 * time.Millisecond, false}, // under a second
		{2 * time.Second, 20 * time.Second, false},              // a tenth of the download
		{0, 15 * time.Second, false},
	} {
		msg := cpuLimitNote(tc.after, tc.download, 1<<30, 2)
		if got := msg != ""; got != tc.want {
			t.Errorf("cpuLimitNote(%v after a %v download) = %q, want a note: %v", tc.after, tc.download, msg, tc.want)
		}
		if tc.want && (!strings.Contains(msg, "CPU (2 cores") || !strings.Contains(msg, "not the link")) {
			t.Errorf("cpuLimitNote = %q: it should name the CPU and its cores", msg)
		}
	}
}
