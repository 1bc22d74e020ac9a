package testbed

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
)

// TestReleaseHost fetches a release through the stand-in as Packer's getters
// do: a client trusting only the stand-in's CA, HTTPS through its proxy.
func TestReleaseHost(t *testing.T) {
	zip := []byte("zip bytes")
	h, err := StartReleaseHost(t.TempDir(), "acme/packer-plugin-demo", map[string]map[string][]byte{
		"v1.2.3": {"packer-plugin-demo_v1.2.3_x5.0_linux_amd64.zip": zip},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the CA file holds no certificate")
	}
	proxy, _ := url.Parse(h.ProxyURL())
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(proxy)
	tr.TLSClientConfig.RootCAs = pool
	c := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	get := func(u string) (int, []byte) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get("https://api.github.com/repos/acme/packer-plugin-demo/git/matching-refs/tags")
	var refs []struct{ Ref string }
	if code != 200 || json.Unmarshal(body, &refs) != nil || len(refs) != 1 || refs[0].Ref != "refs/tags/v1.2.3" {
		t.Errorf("matching-refs: %d %s", code, body)
	}
	code, body = get("https://github.com/acme/packer-plugin-demo/releases/download/v1.2.3/packer-plugin-demo_v1.2.3_x5.0_linux_amd64.zip")
	if code != 200 || string(body) != string(zip) {
		t.Errorf("download: %d %q", code, body)
	}
	if code, _ := get("https://github.com/acme/packer-plugin-demo/releases/download/v1.2.3/missing.zip"); code != 404 {
		t.Errorf("a missing asset answered %d, want 404", code)
	}
	if code, _ := get("https://releases.hashicorp.com/packer-plugin-demo/index.json"); code != 404 {
		t.Errorf("releases.hashicorp.com answered %d, want 404", code)
	}
	if _, err := c.Get("https://example.com/"); err == nil {
		t.Error("the proxy tunnelled to a host it does not stand in for")
	}
	var calls []string
	for _, call := range h.Calls() {
		calls = append(calls, call.String())
	}
	want := []string{
		"GET https://api.github.com/repos/acme/packer-plugin-demo/git/matching-refs/tags -> 200",
		"GET https://github.com/acme/packer-plugin-demo/releases/download/v1.2.3/packer-plugin-demo_v1.2.3_x5.0_linux_amd64.zip -> 302",
		"GET https://release-assets.githubusercontent.com/acme/packer-plugin-demo/v1.2.3/packer-plugin-demo_v1.2.3_x5.0_linux_amd64.zip -> 200",
		"GET https://github.com/acme/packer-plugin-demo/releases/download/v1.2.3/missing.zip -> 404",
		"GET https://releases.hashicorp.com/packer-plugin-demo/index.json -> 404",
		"CONNECT example.com:443 -> 403",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
}
