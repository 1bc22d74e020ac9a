package nixcache

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// A narinfo as cache.nixos.org serves it, signed by cache.nixos.org-1
// (quoted in the Nix documentation's content-addressing blog post).
const hydraNarinfo = `StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
URL: nar/15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx.nar.xz
Compression: xz
FileHash: sha256:15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx
FileSize: 41232
NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i
NarSize: 205968
References: 9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31 w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
Sig: cache.nixos.org-1:uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg==
`

const nixosOrgKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="

// TestVerifyCacheNixosOrgSignature: the fingerprint and the verification
// agree with what Nix signs: a real narinfo verifies with the real key, and
// no longer does once any signed field changes.
func TestVerifyCacheNixosOrgSignature(t *testing.T) {
	k, err := ParsePublicKey(nixosOrgKey)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := ParseNarInfo(hydraNarinfo)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := ni.Verify([]PublicKey{k}); err != nil || name != "cache.nixos.org-1" {
		t.Fatalf("Verify = %q, %v", name, err)
	}
	if got := ni.String(); got != hydraNarinfo {
		t.Errorf("String() does not give the file back:\n%s", got)
	}
	for _, mod := range []func(n *NarInfo){
		func(n *NarInfo) { n.NarSize++ },
		func(n *NarInfo) { n.References = n.References[:1] },
		func(n *NarInfo) { n.StorePath = strings.Replace(n.StorePath, "2.10", "2.11", 1) },
		func(n *NarInfo) { n.NarHash = "sha256:0mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i" },
	} {
		c, _ := ParseNarInfo(hydraNarinfo)
		mod(c)
		if _, err := c.Verify([]PublicKey{k}); err == nil {
			t.Errorf("a changed narinfo still verifies: %s", c)
		}
	}
	other, _ := newKey(t, "other-1")
	if _, err := ni.Verify([]PublicKey{other.Public()}); err == nil || !strings.Contains(err.Error(), "cache.nixos.org-1") || !strings.Contains(err.Error(), "other-1") {
		t.Errorf("Verify with another key = %v, want an error naming both keys", err)
	}
}

func newKey(t *testing.T, name string) (*SecretKey, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := name + ":" + base64.StdEncoding.EncodeToString(priv)
	k, err := ParseSecretKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k, s
}

func TestSignThenVerify(t *testing.T) {
	k, _ := newKey(t, "test-1")
	ni, _ := ParseNarInfo(hydraNarinfo)
	ni.Sigs = nil
	// References in another order sign the same fingerprint.
	ni.References = []string{ni.References[1], ni.References[0]}
	if err := ni.Sign(k); err != nil {
		t.Fatal(err)
	}
	back, err := ParseNarInfo(ni.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.Verify([]PublicKey{k.Public()}); err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(k.Public().String())
	if err != nil || pub.String() != k.Public().String() {
		t.Fatalf("public key round trip: %v", err)
	}
}

func TestSecretKeyFormat(t *testing.T) {
	_, s := newKey(t, "ok-1")
	if _, err := ParseSecretKey(s + "\n"); err != nil {
		t.Errorf("a key file ending in a newline: %v", err)
	}
	name, b64, _ := strings.Cut(s, ":")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	raw[40] ^= 1 // a public half that is not the seed's
	for _, bad := range []string{"", "nocolon", ":" + b64, name + ":AAAA", name + ":" + base64.StdEncoding.EncodeToString(raw)} {
		if _, err := ParseSecretKey(bad); err == nil {
			t.Errorf("ParseSecretKey(%q) accepted it", bad)
		}
	}
	if _, err := ParsePublicKey(s); err == nil {
		t.Error("a secret key parsed as a public key")
	}
}

// TestHashForms: the three ways Nix prints a SHA-256 (nix path-info --json
// uses SRI since 2.19) give the same narinfo hash.
func TestHashForms(t *testing.T) {
	sum := sha256.Sum256([]byte("nar"))
	want := "sha256:" + nix32(sum[:])
	for _, s := range []string{
		"sha256-" + base64.StdEncoding.EncodeToString(sum[:]),
		"sha256:" + hex.EncodeToString(sum[:]),
		want,
	} {
		got, err := SHA256Hash(s)
		if err != nil || got != want {
			t.Errorf("SHA256Hash(%q) = %q, %v; want %q", s, got, err, want)
		}
	}
	if _, err := SHA256Hash("md5:abc"); err == nil {
		t.Error("an md5 hash was taken")
	}
	// The store path hash of the narinfo above decodes and encodes back.
	h, err := parseNix32("1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i", 32)
	if err != nil || nix32(h) != "1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i" {
		t.Errorf("nix32 round trip: %v", err)
	}
}
