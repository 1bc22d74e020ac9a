package nixcache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigPrepare(t *testing.T) {
	dir := t.TempDir()
	_, sec := newKey(t, "cache.example.org-1")
	keyFile := filepath.Join(dir, "cache.sec")
	if err := os.WriteFile(keyFile, []byte(sec), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(dir, "bad.sec")
	os.WriteFile(badKey, []byte("cache.example.org-1:AAAA"), 0o600)
	other, _ := newKey(t, "ci-1")
	f := false
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"bucket and key", Config{S3Bucket: "my-nix-cache", SigningKeyFile: keyFile}, ""},
		{"every option", Config{S3Bucket: "my.nix-cache", Region: "eu-west-1", Prefix: "nix/", Endpoint: "https://minio.example.org:9000", SigningKeyFile: keyFile, TrustedPublicKeys: []string{other.Public().String()}}, ""},
		{"pull only with a public key", Config{S3Bucket: "my-nix-cache", TrustedPublicKeys: []string{other.Public().String()}, Push: &f}, ""},
		{"no bucket", Config{SigningKeyFile: keyFile}, "cache.s3_bucket: required"},
		{"a URL for a bucket", Config{S3Bucket: "s3://my-nix-cache", SigningKeyFile: keyFile}, "cache.s3_bucket"},
		{"upper case", Config{S3Bucket: "My-Cache", SigningKeyFile: keyFile}, "cache.s3_bucket"},
		{"an IP address", Config{S3Bucket: "192.168.1.2", SigningKeyFile: keyFile}, "not an IP address"},
		{"two dots", Config{S3Bucket: "my..cache", SigningKeyFile: keyFile}, "adjacent dots"},
		{"reserved suffix", Config{S3Bucket: "my-cache-s3alias", SigningKeyFile: keyFile}, "suffix"},
		{"bad region", Config{S3Bucket: "my-nix-cache", Region: "Ohio", SigningKeyFile: keyFile}, "cache.region"},
		{"bad prefix", Config{S3Bucket: "my-nix-cache", Prefix: "a/../b", SigningKeyFile: keyFile}, "cache.prefix"},
		{"endpoint with a path", Config{S3Bucket: "my-nix-cache", Endpoint: "https://minio.example.org/bucket", SigningKeyFile: keyFile}, "cache.endpoint"},
		{"endpoint without scheme", Config{S3Bucket: "my-nix-cache", Endpoint: "minio.example.org", SigningKeyFile: keyFile}, "cache.endpoint"},
		{"push without a key", Config{S3Bucket: "my-nix-cache"}, "cache.signing_key_file: needed to push"},
		{"missing key file", Config{S3Bucket: "my-nix-cache", SigningKeyFile: filepath.Join(dir, "none")}, "cache.signing_key_file"},
		{"not a key", Config{S3Bucket: "my-nix-cache", SigningKeyFile: badKey}, "64 bytes"},
		{"bad public key", Config{S3Bucket: "my-nix-cache", SigningKeyFile: keyFile, TrustedPublicKeys: []string{"x"}}, "cache.trusted_public_keys[0]"},
		{"pull without any key", Config{S3Bucket: "my-nix-cache", Push: &f}, "cache.trusted_public_keys: pulling needs a key"},
		{"neither pull nor push", Config{S3Bucket: "my-nix-cache", SigningKeyFile: keyFile, Pull: &f, Push: &f}, "both false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.cfg.Prepare()
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			all := strings.Join(msgs, "\n")
			if tc.want == "" && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", all)
			}
			if tc.want != "" && !strings.Contains(all, tc.want) {
				t.Fatalf("errors %q do not say %q", all, tc.want)
			}
		})
	}
}

func TestConfigNames(t *testing.T) {
	dir := t.TempDir()
	k, sec := newKey(t, "cache.example.org-1")
	keyFile := filepath.Join(dir, "cache.sec")
	os.WriteFile(keyFile, []byte(sec), 0o600)
	c := Config{S3Bucket: "my-nix-cache", Prefix: "/nix/", SigningKeyFile: keyFile}
	if errs := c.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if c.URL() != "s3://my-nix-cache/nix" || c.key("x.narinfo") != "nix/x.narinfo" {
		t.Errorf("URL %q, key %q", c.URL(), c.key("x.narinfo"))
	}
	if c.SigningKeyName() != "cache.example.org-1" || strings.Join(c.KeyNames(), ",") != "cache.example.org-1" {
		t.Errorf("names %q %q", c.SigningKeyName(), c.KeyNames())
	}
	if !c.PullEnabled() || !c.PushEnabled() {
		t.Error("pull and push default to true")
	}
	_ = k
}
