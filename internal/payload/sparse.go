package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// decoderConcurrency is the zstd decoder's concurrency for the image: with
// more than one, it reads, decodes and executes a stream's blocks in
// separate goroutines (about 1.6x one goroutine's speed on two cores; see
// docs/performance.md). Its memory stays a few blocks and the window.
func decoderConcurrency() int {
	return min(runtime.GOMAXPROCS(0), 4)
}

// decodeSparse decompresses the zstd stream r into the file dst, leaving
// all-zero 4 KiB blocks as holes, and checks zstd's frame checksums. It
// returns the decompressed size, with withSum its hex SHA-256, and its first
// sector. r may block until more of it is there; the decoder's goroutines
// end with Close.
func decodeSparse(r io.Reader, dst string, withSum bool) (size int64, sum string, first []byte, err error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(decoderConcurrency()), zstd.WithDecoderLowmem(false))
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
	var h hash.Hash
	if withSum {
		h = sha256.New()
	}
	size, first, err = copySparse(out, dec, h)
	if err != nil {
		return 0, "", nil, err
	}
	if err := out.Truncate(size); err != nil {
		return 0, "", nil, err
	}
	if h != nil {
		sum = hex.EncodeToString(h.Sum(nil))
	}
	return size, sum, first, nil
}

// copySparse copies r to the start of the empty file w, hashing everything
// into h (unless nil) and writing only blocks that are not all zero. Hashing and writing are two
// goroutines, each about as costly as the decoding that feeds them, so that
// on several cores the writes overlap the hash of the next piece.
func copySparse(w io.WriterAt, r io.Reader, h hash.Hash) (int64, []byte, error) {
	const buffers = 3
	type piece struct {
		b   []byte
		off int64
	}
	free := make(chan []byte, buffers)
	for range buffers {
		free <- make([]byte, 4<<20)
	}
	pieces := make(chan piece, buffers)
	var failed atomic.Bool
	written := make(chan error, 1)
	go func() {
		var err error
		for p := range pieces {
			if err == nil {
				if err = writeSparse(w, p.b, p.off, true); err != nil {
					failed.Store(true)
				}
			}
			free <- p.b[:cap(p.b)]
		}
		written <- err
	}()
	var off int64
	var first []byte
	var rerr error
	for !failed.Load() {
		buf := <-free
		n, err := fill(r, buf)
		if n > 0 {
			if h != nil {
				h.Write(buf[:n])
			}
			if first == nil {
				first = append([]byte(nil), buf[:min(n, 512)]...)
			}
			pieces <- piece{b: buf[:n], off: off}
			off += int64(n)
		} else {
			free <- buf
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(pieces)
	if werr := <-written; werr != nil {
		return off, first, werr
	}
	return off, first, rerr
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

// maxWrite caps one write: the page cache allocates large folios for
// larger writes, which cost several times more kernel time per byte on some
// machines (docs/performance.md); smaller writes cost one more system call
// per 256 KiB.
const maxWrite = 256 << 10

// writeSparse writes p at off; with skipZeros the all-zero parts of p that
// cover whole aligned blocks (and any all-zero edge pieces) are skipped.
func writeSparse(f io.WriterAt, p []byte, off int64, skipZeros bool) error {
	if !skipZeros {
		return writeAt(f, p, off)
	}
	start := -1 // start in p of pending non-zero data
	for i := 0; i < len(p); {
		// The segment up to the next block boundary.
		end := i + int(holeBlock-(off+int64(i))%holeBlock)
		if end > len(p) {
			end = len(p)
		}
		if isZero(p[i:end]) {
			if start >= 0 {
				if err := writeAt(f, p[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = end
	}
	if start >= 0 {
		return writeAt(f, p[start:], off+int64(start))
	}
	return nil
}

// writeAt writes p at off in pieces of at most maxWrite.
func writeAt(f io.WriterAt, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), maxWrite)
		if _, err := f.WriteAt(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

var zeroBlock [holeBlock]byte

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), maxWrite)
		if n > holeBlock {
			n = holeBlock
		}
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
