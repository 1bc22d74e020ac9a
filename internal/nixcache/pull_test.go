package nixcache

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// fakeS3 answers path-style GetObject and HeadObject from a map, as S3
// does for a bucket the caller may list (404 NoSuchKey when missing).
type fakeS3 struct {
	mu      sync.Mutex
	objects map[string]string
	gets    []string
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := strings.TrimPrefix(r.URL.Path, "/cache-bucket/")
	f.gets = append(f.gets, r.Method+" "+key)
	body, ok := f.objects[key]
	if !ok {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`)
		return
	}
	io.WriteString(w, body)
}

func testConfig(t *testing.T, endpoint string, trusted ...string) *Config {
	t.Helper()
	_, sec := newKey(t, "test-cache-1")
	file := filepath.Join(t.TempDir(), "cache.sec")
	os.WriteFile(file, []byte(sec), 0o600)
	c := &Config{S3Bucket: "cache-bucket", Region: "us-east-2", Prefix: "nix", Endpoint: endpoint, SigningKeyFile: file, TrustedPublicKeys: trusted}
	if errs := c.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	return c
}

// TestPullServesVerifiedPathsOnly: the pull answers nix-cache-info itself,
// serves a narinfo signed by a trusted key, refuses (404, with a warning
// naming the path and the keys) one signed by another key, redirects to a
// presigned S3 URL only the NARs of narinfos it served, and answers nothing
// without its random path.
func TestPullServesVerifiedPathsOnly(t *testing.T) {
	s3 := &fakeS3{objects: map[string]string{}}
	srv := httptest.NewServer(s3)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)

	good, _ := ParseNarInfo(hydraNarinfo)
	good.Sigs = nil
	good.Sign(cfg.secret)
	other, _ := newKey(t, "stranger-1")
	bad, _ := ParseNarInfo(strings.ReplaceAll(hydraNarinfo, "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1", "a9yy7v61ipb5rx6i35zq1mvc2iqfmps1"))
	bad.URL = "nar/bad.nar.xz"
	bad.Sigs = nil
	bad.Sign(other)
	s3.objects["nix/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"] = good.String()
	s3.objects["nix/a9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"] = bad.String()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	var wmu sync.Mutex
	ac := aws.Config{Region: "us-east-2", Credentials: credentials.NewStaticCredentialsProvider("AKIATEST", "secret", "")}
	p, err := StartPull(context.Background(), cfg, &ac, ln, func(s string) { wmu.Lock(); warnings = append(warnings, s); wmu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get(p.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/nix-cache-info"); resp.StatusCode != 200 || !strings.Contains(body, "StoreDir: /nix/store") || !strings.Contains(body, "Priority: 50") {
		t.Errorf("nix-cache-info: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("/../nix-cache-info"); resp.StatusCode != 404 {
		t.Errorf("a path outside the token: %d", resp.StatusCode)
	}
	if resp, err := client.Get("http://" + ln.Addr().String() + "/nix-cache-info"); err != nil || resp.StatusCode != 404 {
		t.Errorf("without the token: %v %v", resp, err)
	}
	if resp, _ := get("/nar/" + strings.TrimPrefix(good.URL, "nar/")); resp.StatusCode != 404 {
		t.Errorf("a NAR before its narinfo was served: %d", resp.StatusCode)
	}
	if resp, body := get("/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"); resp.StatusCode != 200 || body != good.String() {
		t.Errorf("the trusted narinfo: %d %q", resp.StatusCode, body)
	}
	resp, _ := get("/" + good.URL)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, srv.URL+"/cache-bucket/nix/"+good.URL+"?") || !strings.Contains(loc, "X-Amz-Signature=") || !strings.Contains(loc, "X-Amz-Expires=900") {
		t.Errorf("the NAR: %d to %q, want a redirect to a presigned URL of 15 minutes", resp.StatusCode, loc)
	}
	if resp, _ := get("/a9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"); resp.StatusCode != 404 {
		t.Errorf("a narinfo signed by an untrusted key: %d", resp.StatusCode)
	}
	if resp, _ := get("/nar/bad.nar.xz"); resp.StatusCode != 404 {
		t.Errorf("the NAR of a refused narinfo: %d", resp.StatusCode)
	}
	if resp, _ := get("/0000000000000000000000000000000a.narinfo"); resp.StatusCode != 404 {
		t.Errorf("a missing narinfo: %d", resp.StatusCode)
	}
	st := p.Stats()
	if st.Paths != 1 || st.Bytes != good.FileSize || len(st.Refused) != 1 {
		t.Errorf("stats %+v", st)
	}
	wmu.Lock()
	defer wmu.Unlock()
	if len(warnings) != 1 || !strings.Contains(warnings[0], "refusing /nix/store/a9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10") ||
		!strings.Contains(warnings[0], "stranger-1") || !strings.Contains(warnings[0], "test-cache-1") {
		t.Errorf("warnings %q, want one naming the refused path and both keys", warnings)
	}
	if strings.Contains(p.NixOptions()[0][1], "AKIATEST") {
		t.Error("the substituter URL carries the access key")
	}
	if o := p.NixOptions(); o[1][1] != cfg.secret.Public().String() || o[2] != [2]string{"fallback", "true"} {
		t.Errorf("NixOptions %q", o)
	}
}

// TestPullNeedsAReadableBucket: a bucket that does not answer fails the
// start (the build then runs without the cache).
func TestPullNeedsAReadableBucket(t *testing.T) {
	cfg := testConfig(t, "http://127.0.0.1:9")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	ac := aws.Config{Region: "us-east-2", Credentials: credentials.NewStaticCredentialsProvider("AKIATEST", "secret", "")}
	if _, err := StartPull(context.Background(), cfg, &ac, ln, func(string) {}); err == nil || !strings.Contains(err.Error(), "s3://cache-bucket/nix cannot be read") {
		t.Fatalf("StartPull = %v", err)
	}
}
