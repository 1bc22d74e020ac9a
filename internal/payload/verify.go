package payload

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"
)

// verify waits for the local SHA-256 of the download and compares it with
// the host's.
func (r *run) verify(d *incoming) error {
	if d.decodes {
		// The hash is of the bytes the decoder reads: it ends with it
		// (checkImage reports the decoder's own failure).
		r.ui.Say("Decompressing while verifying the download's SHA-256")
		done := r.timer.track(PhaseDecompress)
		d.decoding.Wait()
		done()
	} else {
		r.ui.Say("Verifying the download's SHA-256")
	}
	done := r.timer.track(PhaseVerify)
	err := d.hashing.Wait()
	done()
	if err != nil {
		return phaseErr(PhaseVerify, fmt.Errorf("reading the downloaded file: %w", err), nil)
	}
	if d.localSum != d.remoteSum {
		return phaseErr(PhaseVerify, fmt.Errorf("the downloaded image's SHA-256 is %s but the host's copy has %s: the transfer was corrupted or the image changed while it downloaded; the partial file was removed, run the build again", d.localSum, d.remoteSum), nil)
	}
	r.ui.Say("SHA-256 verified: " + d.remoteSum)
	return nil
}

// checkImage makes sure the local image is an SD card image, after waiting
// for its decompression when there is one, and returns the local image's
// size and SHA-256.
func (r *run) checkImage(d *incoming, n localNames, info imageInfo) (int64, string, error) {
	if n.decompress {
		r.ui.Say(fmt.Sprintf("Decompressed into %s (sparse)", filepath.Join(r.cfg.OutputDirectory, n.final)))
		if err := d.decoding.Wait(); err != nil {
			return 0, "", phaseErr(PhaseDecompress, fmt.Errorf("decompressing %s: %w", n.base, err), nil)
		}
		if msg := cpuLimitNote(max(d.decodedAt.Sub(d.fetched), 0), r.timer.snapshot()[PhaseDownload], d.decoded.size, runtime.NumCPU()); msg != "" {
			r.ui.Say(msg)
		}
		sum, err := d.imageSum()
		if err != nil {
			return 0, "", phaseErr(PhaseVerify, err, nil)
		}
		if err := checkMBR(d.decoded.first); err != nil {
			return 0, "", phaseErr(PhaseVerify, fmt.Errorf("the built file %s is not an SD card image: %w; make sure the configuration builds nixpkgs' sd-image (sd-image-aarch64.nix)", n.base, err), nil)
		}
		d.file.Close()
		if err := os.Remove(n.download); err != nil {
			return 0, "", phaseErr(PhaseDecompress, err, nil)
		}
		return d.decoded.size, sum, nil
	}
	if err := d.file.Sync(); err != nil {
		return 0, "", phaseErr(PhaseDownload, fmt.Errorf("writing %s: %w", n.download, err), nil)
	}
	if err := d.file.Close(); err != nil {
		return 0, "", phaseErr(PhaseDownload, fmt.Errorf("writing %s: %w", n.download, err), nil)
	}
	if err := checkImageFile(n.download, n.zst); err != nil {
		return 0, "", phaseErr(PhaseVerify, fmt.Errorf("the built file %s is not an SD card image: %w; make sure the configuration builds nixpkgs' sd-image (sd-image-aarch64.nix)", n.base, err), nil)
	}
	return info.size, d.remoteSum, nil
}

// imageSum is the decoded image's SHA-256: the one hashed here, checked
// against the host's when there is one, else the host's.
func (d *incoming) imageSum() (string, error) {
	local, remote := d.decoded.sum, d.remoteImageSum
	switch {
	case local == "":
		return remote, nil
	case remote != "" && local != remote:
		return "", fmt.Errorf("the decompressed image's SHA-256 is %s but the host's decompressed copy has %s, although the compressed files matched: this machine's decompression or disk failed; run the build again", local, remote)
	}
	return local, nil
}

// cpuLimitNote says, when decoding went on well after the download ended,
// that this machine's CPU and not the link set the pace: the decoder follows
// the download, so on a link it can keep up with it ends soon after the last
// range. It is empty otherwise.
func cpuLimitNote(after, download time.Duration, decoded int64, cpus int) string {
	if after < time.Second || after < download/4 {
		return ""
	}
	total := download + after
	return fmt.Sprintf("Decompressed %s in all at %s/s, finishing %s after the download: this machine's CPU (%d cores, decompressing, hashing and writing the image), not the link, was the limit",
		humanBytes(decoded), humanBytes(int64(float64(decoded)/max(total.Seconds(), 1e-3))), after.Round(100*time.Millisecond), cpus)
}

// hashReader is the hex SHA-256 of everything r yields.
func hashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Partition types an SD card image must have.
var fatTypes = map[byte]string{0x0b: "FAT32 (CHS)", 0x0c: "FAT32 (LBA)", 0x0e: "FAT16 (LBA)"}

const linuxType = 0x83

// checkMBR checks that the first sector is an MBR with a FAT partition (the
// firmware partition) and a Linux partition (the root file system), as a
// NixOS SD card image has.
func checkMBR(sector []byte) error {
	if len(sector) < 512 {
		return fmt.Errorf("it is only %d bytes long, shorter than one sector", len(sector))
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		return fmt.Errorf("it has no MBR partition table (bytes 510-511 are %#02x %#02x, not 0x55 0xaa)", sector[510], sector[511])
	}
	var fat, linux bool
	var types []string
	for i := 0; i < 4; i++ {
		e := sector[446+16*i : 446+16*(i+1)]
		t := e[4]
		if t == 0 {
			continue
		}
		types = append(types, fmt.Sprintf("%#02x", t))
		sectors := binary.LittleEndian.Uint32(e[12:16])
		if sectors == 0 {
			continue
		}
		if _, ok := fatTypes[t]; ok {
			fat = true
		}
		if t == linuxType {
			linux = true
		}
	}
	switch {
	case !fat && !linux:
		return fmt.Errorf("its partition table has neither a FAT firmware partition nor a Linux root partition (types found: %v)", types)
	case !fat:
		return fmt.Errorf("its partition table has no FAT firmware partition (type 0x0b, 0x0c or 0x0e; types found: %v)", types)
	case !linux:
		return fmt.Errorf("its partition table has no Linux root partition (type 0x83; types found: %v)", types)
	}
	return nil
}

// checkImageFile checks the MBR of a plain image file, or of the image inside
// a .zst file.
func checkImageFile(path string, compressed bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if compressed {
		dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer dec.Close()
		r = dec
	}
	sector := make([]byte, 512)
	n, err := io.ReadFull(r, sector)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading its first sector: %w", err)
	}
	return checkMBR(sector[:n])
}
