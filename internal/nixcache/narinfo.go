// Package nixcache is the binary cache in the user's own S3 bucket (the
// `cache` block): the plugin serves it to the instance's Nix through an SSH
// remote forward (pull) and uploads what a build made on the instance
// (push). Neither the AWS credentials nor the signing key leave this
// machine: the instance gets presigned URLs, the plugin signs narinfos.
package nixcache

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// storeDir is the Nix store the cache serves.
const storeDir = "/nix/store"

// nix32Chars is Nix's base-32 alphabet (no e, o, u, t).
const nix32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// nix32 encodes a hash as Nix prints it (printHash32: last bits first).
func nix32(h []byte) string {
	n := (len(h)*8-1)/5 + 1
	var b strings.Builder
	for i := n - 1; i >= 0; i-- {
		bit := uint(i * 5)
		j, k := bit/8, bit%8
		c := h[j] >> k
		if int(j) < len(h)-1 {
			c |= h[j+1] << (8 - k)
		}
		b.WriteByte(nix32Chars[c&0x1f])
	}
	return b.String()
}

// parseNix32 decodes Nix's base 32 into size bytes.
func parseNix32(s string, size int) ([]byte, error) {
	if len(s) != (size*8-1)/5+1 {
		return nil, fmt.Errorf("its hash %q is not a Nix base-32 hash of %d bytes", s, size)
	}
	h := make([]byte, size)
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(nix32Chars, s[len(s)-1-i])
		if d < 0 {
			return nil, fmt.Errorf("its hash %q is not a Nix base-32 hash", s)
		}
		bit := uint(i * 5)
		j, k := bit/8, bit%8
		h[j] |= byte(d << k)
		if int(j) < size-1 {
			h[j+1] |= byte(d >> (8 - k))
		} else if d>>(8-k) != 0 {
			return nil, fmt.Errorf("its hash %q is not a Nix base-32 hash of %d bytes", s, size)
		}
	}
	return h, nil
}

// SHA256Hash reads a SHA-256 in any form Nix prints one: "sha256:<nix32>",
// "sha256:<hex>", "sha256-<base64>" (SRI), and returns it as the narinfo
// form "sha256:<nix32>".
func SHA256Hash(s string) (string, error) {
	var raw []byte
	var err error
	switch {
	case strings.HasPrefix(s, "sha256-"):
		raw, err = base64.StdEncoding.DecodeString(s[len("sha256-"):])
	case strings.HasPrefix(s, "sha256:") && len(s) == len("sha256:")+64:
		raw, err = hex.DecodeString(s[len("sha256:"):])
	case strings.HasPrefix(s, "sha256:"):
		raw, err = parseNix32(s[len("sha256:"):], sha256.Size)
	default:
		err = errors.New("its hash is not a SHA-256")
	}
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("its NAR hash %q is not a SHA-256 as Nix writes one", s)
	}
	return "sha256:" + nix32(raw), nil
}

// NarInfo is a binary cache's description of one store path
// (<hash>.narinfo).
type NarInfo struct {
	StorePath   string
	URL         string
	Compression string
	FileHash    string
	FileSize    int64
	NarHash     string
	NarSize     int64
	// References are base names (hash-name), as narinfo files hold them.
	References []string
	Deriver    string
	CA         string
	Sigs       []string
}

// ParseNarInfo reads a narinfo file.
func ParseNarInfo(data string) (*NarInfo, error) {
	n := &NarInfo{Compression: "bzip2"} // Nix's default when the field is missing
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "StorePath":
			n.StorePath = v
		case "URL":
			n.URL = v
		case "Compression":
			n.Compression = v
		case "FileHash":
			n.FileHash = v
		case "FileSize":
			n.FileSize, err = strconv.ParseInt(v, 10, 64)
		case "NarHash":
			n.NarHash = v
		case "NarSize":
			n.NarSize, err = strconv.ParseInt(v, 10, 64)
		case "References":
			n.References = strings.Fields(v)
		case "Deriver":
			n.Deriver = v
		case "CA":
			n.CA = v
		case "Sig":
			n.Sigs = append(n.Sigs, v)
		}
		if err != nil {
			return nil, fmt.Errorf("narinfo field %s: %w", k, err)
		}
	}
	if !strings.HasPrefix(n.StorePath, storeDir+"/") || n.URL == "" || n.NarHash == "" || n.NarSize <= 0 {
		return nil, errors.New("narinfo lacks StorePath, URL, NarHash or NarSize")
	}
	return n, nil
}

// String is the narinfo file.
func (n *NarInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "StorePath: %s\nURL: %s\nCompression: %s\n", n.StorePath, n.URL, n.Compression)
	if n.FileHash != "" {
		fmt.Fprintf(&b, "FileHash: %s\nFileSize: %d\n", n.FileHash, n.FileSize)
	}
	fmt.Fprintf(&b, "NarHash: %s\nNarSize: %d\n", n.NarHash, n.NarSize)
	fmt.Fprintf(&b, "References: %s\n", strings.Join(n.References, " "))
	if n.Deriver != "" {
		fmt.Fprintf(&b, "Deriver: %s\n", n.Deriver)
	}
	for _, s := range n.Sigs {
		fmt.Fprintf(&b, "Sig: %s\n", s)
	}
	if n.CA != "" {
		fmt.Fprintf(&b, "CA: %s\n", n.CA)
	}
	return b.String()
}

// Fingerprint is what a narinfo signature signs, as Nix's
// ValidPathInfo::fingerprint: "1;<store path>;<nar hash>;<nar size>;<the
// references' store paths, sorted, comma-separated>".
func (n *NarInfo) Fingerprint() (string, error) {
	h, err := SHA256Hash(n.NarHash)
	if err != nil {
		return "", err
	}
	refs := make([]string, len(n.References))
	for i, r := range n.References {
		refs[i] = path.Join(storeDir, r)
	}
	slices.Sort(refs)
	return "1;" + n.StorePath + ";" + h + ";" + strconv.FormatInt(n.NarSize, 10) + ";" + strings.Join(refs, ","), nil
}

// Sign adds key's signature.
func (n *NarInfo) Sign(key *SecretKey) error {
	fp, err := n.Fingerprint()
	if err != nil {
		return err
	}
	sig := ed25519.Sign(key.key, []byte(fp))
	n.Sigs = append(n.Sigs, key.Name+":"+base64.StdEncoding.EncodeToString(sig))
	return nil
}

// Verify reports the name of a key in keys whose signature on n verifies, or
// an error saying whose signatures are there.
func (n *NarInfo) Verify(keys []PublicKey) (string, error) {
	fp, err := n.Fingerprint()
	if err != nil {
		return "", err
	}
	var names []string
	for _, s := range n.Sigs {
		name, b64, _ := strings.Cut(s, ":")
		names = append(names, name)
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(sig) != ed25519.SignatureSize {
			continue
		}
		for _, k := range keys {
			if k.Name == name && ed25519.Verify(k.key, []byte(fp), sig) {
				return name, nil
			}
		}
	}
	trusted := make([]string, len(keys))
	for i, k := range keys {
		trusted[i] = k.Name
	}
	if len(names) == 0 {
		return "", fmt.Errorf("it carries no signature (trusted keys: %s)", strings.Join(trusted, ", "))
	}
	return "", fmt.Errorf("its signatures (%s) do not verify with the trusted keys (%s)", strings.Join(names, ", "), strings.Join(trusted, ", "))
}

// SecretKey is a Nix signing key ("name:base64(64-byte Ed25519 key)", as
// `nix key generate-secret` writes it).
type SecretKey struct {
	Name string
	key  ed25519.PrivateKey
}

// PublicKey is a Nix public key ("name:base64(32-byte Ed25519 key)").
type PublicKey struct {
	Name string
	key  ed25519.PublicKey
}

// ParseSecretKey reads a Nix secret key.
func ParseSecretKey(s string) (*SecretKey, error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || name == "" {
		return nil, errors.New("not a Nix secret key (NAME:BASE64)")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, errors.New("not a Nix secret key: the part after the name must be 64 bytes in base64")
	}
	k := ed25519.PrivateKey(raw)
	// The second half is the public key; a key whose halves disagree signs
	// with a public key nobody can verify against.
	if !ed25519.NewKeyFromSeed(k.Seed()).Equal(k) {
		return nil, errors.New("not a Nix secret key: its public half does not match its seed")
	}
	return &SecretKey{Name: name, key: k}, nil
}

// ReadSecretKeyFile reads a Nix secret key file.
func ReadSecretKeyFile(file string) (*SecretKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseSecretKey(string(b))
}

// Public is the key's public half.
func (k *SecretKey) Public() PublicKey {
	return PublicKey{Name: k.Name, key: k.key.Public().(ed25519.PublicKey)}
}

// ParsePublicKey reads a Nix public key.
func ParsePublicKey(s string) (PublicKey, error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || name == "" {
		return PublicKey{}, errors.New("not a Nix public key (NAME:BASE64)")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, errors.New("not a Nix public key: the part after the name must be 32 bytes in base64")
	}
	return PublicKey{Name: name, key: ed25519.PublicKey(raw)}, nil
}

// String is the key as nix.conf's trusted-public-keys holds it.
func (k PublicKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.key)
}

// hashPart is the hash of a store path's base name.
func hashPart(storePath string) string {
	h, _, _ := strings.Cut(path.Base(storePath), "-")
	return h
}
