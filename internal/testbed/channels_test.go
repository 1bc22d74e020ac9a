package testbed

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestChannelServerAnswersAsTheRealOne: a channel redirects (301) to a
// release named after its version and short revision, whose git-revision is
// the full revision; a channel's file redirects (302) to the release's; an
// unknown channel is 404; Advance moves the channel and keeps the old
// release's files.
func TestChannelServerAnswersAsTheRealOne(t *testing.T) {
	c, err := startChannelServer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(c *http.Client, u string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, strings.TrimSpace(string(b))
	}
	resp, _ := get(noFollow, c.URL()+"/nixos-26.05")
	first := c.Revision("nixos-26.05")
	want := c.URL() + "/releases/nixos/26.05/nixos-26.05.806273." + first[:12]
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Fatalf("GET /nixos-26.05: %s to %q, want 301 to %q", resp.Status, resp.Header.Get("Location"), want)
	}
	if _, body := get(http.DefaultClient, want+"/git-revision"); body != first {
		t.Errorf("the release's git-revision = %q, want %s", body, first)
	}
	resp, _ = get(noFollow, c.URL()+"/nixos-26.05/nixexprs.tar.xz")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want+"/nixexprs.tar.xz" {
		t.Errorf("GET /nixos-26.05/nixexprs.tar.xz: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if resp, _ := get(noFollow, c.URL()+"/nixos-26.06"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nixos-26.06 (no such channel): %s, want 404", resp.Status)
	}
	resp, _ = get(noFollow, c.URL()+"/nixos-unstable")
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/releases/nixos/unstable/nixos-26.11pre806273.") {
		t.Errorf("nixos-unstable redirects to %q", loc)
	}
	next := c.Advance("nixos-26.05")
	if next == first || c.Revision("nixos-26.05") != next || !strings.HasSuffix(c.ReleaseURL("nixos-26.05"), next[:12]) {
		t.Fatalf("Advance: %s then %s (release %s)", first, next, c.ReleaseURL("nixos-26.05"))
	}
	if _, body := get(http.DefaultClient, c.URL()+"/nixos-26.05/git-revision"); body != next {
		t.Errorf("after Advance the channel's git-revision = %q, want %s", body, next)
	}
	if _, body := get(http.DefaultClient, want+"/git-revision"); body != first {
		t.Errorf("after Advance the old release's git-revision = %q, want %s", body, first)
	}
}
