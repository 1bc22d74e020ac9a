package payload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// DecodeLocal decodes the zstd file src into the sparse image dst as the
// download's local work does, with every byte already there: the SHA-256 of
// the compressed bytes the decoder reads, zstd's frame checksum (this
// machine's zstd program when there is one), sparse writes, and with hashImage the image's SHA-256 too (empty otherwise). It
// is the benchmark's "decode limit": how fast this machine turns the
// compressed file into a verified image.
func DecodeLocal(src, dst string, hashImage bool) (compressedSum, imageSum string, err error) {
	f, err := os.Open(src)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	h := sha256.New()
	_, imageSum, _, err = decodeImage(context.Background(), io.TeeReader(f, h), dst, hashImage)
	if err != nil {
		return "", "", err
	}
	if _, err := io.Copy(h, f); err != nil {
		return "", "", err
	}
	return hex.EncodeToString(h.Sum(nil)), imageSum, nil
}
