package payload

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

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

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// decompressSparse decompresses the zstd file src into dst, leaving all-zero
// 4 KiB blocks as holes. It returns the decompressed size, its hex SHA-256
// and its first sector.
func decompressSparse(ctx context.Context, src, dst string) (size int64, sum string, first []byte, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", nil, err
	}
	defer in.Close()
	return decodeSparse(&ctxReader{ctx: ctx, r: in}, dst)
}

// decodeSparse decompresses the zstd stream r into the file dst, leaving
// all-zero 4 KiB blocks as holes. It returns the decompressed size, its hex
// SHA-256 and its first sector. It reads r only from its own goroutine (no
// read-ahead goroutine), so r may block until more of it is there.
func decodeSparse(r io.Reader, dst string) (size int64, sum string, first []byte, err error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false))
	if err != nil {
		return 0, "", nil, err
	}
	defer dec.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, "", nil, err
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	h := sha256.New()
	size, first, err = copySparse(out, dec, h)
	if err != nil {
		return 0, "", nil, err
	}
	if err := out.Truncate(size); err != nil {
		return 0, "", nil, err
	}
	return size, hex.EncodeToString(h.Sum(nil)), first, nil
}

// hashReader is the hex SHA-256 of everything r yields.
func hashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copySparse copies r to the start of the empty file w, hashing everything
// and writing only blocks that are not all zero.
func copySparse(w io.WriterAt, r io.Reader, h hash.Hash) (int64, []byte, error) {
	buf := make([]byte, 4<<20)
	var off int64
	var first []byte
	for {
		n, rerr := fill(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			if first == nil {
				first = append([]byte(nil), buf[:min(n, 512)]...)
			}
			if err := writeSparse(w, buf[:n], off, true); err != nil {
				return off, first, err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			return off, first, nil
		}
		if rerr != nil {
			return off, first, rerr
		}
	}
}

// fill reads until buf is full or r fails; unlike io.ReadFull it passes r's
// own error on (a decoder's io.ErrUnexpectedEOF is a truncated stream).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
