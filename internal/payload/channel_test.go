package payload

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// channelServer answers as channels.nixos.org and releases.nixos.org do: a
// channel redirects (301) to its release, whose git-revision holds the full
// revision; a channel it does not have is 404.
func channelServer(t *testing.T, releases map[string]string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/")
		if rel, ok := releases[p]; ok {
			http.Redirect(w, r, srv.URL+"/releases/nixos/"+rel, http.StatusMovedPermanently)
			return
		}
		if rest, ok := strings.CutPrefix(p, "releases/nixos/"); ok && strings.HasSuffix(rest, "/git-revision") {
			name := strings.TrimSuffix(rest[strings.LastIndex(strings.TrimSuffix(rest, "/git-revision"), "/")+1:], "/git-revision")
			short := name[strings.LastIndex(name, ".")+1:]
			w.Write([]byte(short + strings.Repeat("0", 40-len(short)) + "\n"))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPinNixpkgsFixesTheRelease(t *testing.T) {
	srv := channelServer(t, map[string]string{"nixos-26.05": "26.05/nixos-26.05.806273.650e572363c0"})
	cfg := &Config{Nixpkgs: "nixos-26.05", NixpkgsChannelsURL: srv.URL, RemoteDirectory: "/tmp/r"}
	ui := packersdk.TestUi(t)
	if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
		t.Fatal(err)
	}
	p := cfg.Pin()
	wantURL := srv.URL + "/releases/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz"
	if p == nil || p.URL != wantURL || p.Revision != "650e572363c0"+strings.Repeat("0", 28) || p.Version != "26.05.806273.650e572363c0" {
		t.Fatalf("pin = %+v, want %s", p, wantURL)
	}
	if args := strings.Join(nixArgs(cfg), " "); !strings.Contains(args, "-I nixpkgs="+wantURL+" ") {
		t.Errorf("the build does not use the pinned release: %s", args)
	}
}

func TestPinNixpkgsUnknownChannelFails(t *testing.T) {
	srv := channelServer(t, map[string]string{
		"nixos-26.05":      "26.05/nixos-26.05.806273.650e572363c0",
		"nixos-unstable":   "unstable/nixos-26.11pre806999.1234567890ab",
		"nixpkgs-unstable": "unstable/nixpkgs-26.11pre806999.1234567890ab",
	})
	cfg := &Config{Nixpkgs: "nixos-26.06", NixpkgsChannelsURL: srv.URL, now: day(t, "2026-12-03")}
	err := cfg.PinNixpkgs(context.Background(), packersdk.TestUi(t))
	if err == nil {
		t.Fatal("a channel the server does not have passed")
	}
	msg := err.Error()
	for _, want := range []string{`"nixos-26.06" does not exist`, "nixos-unstable", "nixpkgs-unstable"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %s", want, msg)
		}
	}
	if !strings.Contains(msg, "nixos-26.05") {
		t.Errorf("the error does not name the living nixos-26.05: %s", msg)
	}
}

func TestPinNixpkgsUnreachableServerWarns(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	cfg := &Config{Nixpkgs: "nixos-26.05", NixpkgsChannelsURL: srv.URL}
	ui := &testUi{}
	if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
		t.Fatalf("an unreachable channel server failed the build: %v", err)
	}
	if cfg.Pin() != nil || !strings.Contains(nixpkgsURL(cfg), "channel:nixos-26.05") {
		t.Errorf("without the server the build should use channel:nixos-26.05, got %s", nixpkgsURL(cfg))
	}
	if out := strings.Join(ui.errors, "\n"); !strings.Contains(out, "Warning: nixpkgs: could not ask the channel server") {
		t.Errorf("no warning: %q", out)
	}
}

func TestPinNixpkgsEndOfLifeWarns(t *testing.T) {
	srv := channelServer(t, map[string]string{"nixos-24.11": "24.11/nixos-24.11.719113.50ab793786d9"})
	cfg := &Config{Nixpkgs: "nixos-24.11", NixpkgsChannelsURL: srv.URL, now: day(t, "2026-12-03")}
	ui := &testUi{}
	if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
		t.Fatal(err)
	}
	if out := strings.Join(ui.errors, "\n"); !strings.Contains(out, "nixos-24.11 reached its end of life on 2025-06-30") {
		t.Errorf("no end-of-life warning: %q", out)
	}
	if cfg.Pin() == nil {
		t.Error("an end-of-life channel that exists was not pinned")
	}
}

func TestChannelEndOfLife(t *testing.T) {
	for ch, want := range map[string]string{"nixos-25.05": "2025-12-31", "nixos-25.11": "2026-06-30", "nixos-26.05-small": "2026-12-31"} {
		got, ok := channelEndOfLife(ch)
		if !ok || got.Format(time.DateOnly) != want {
			t.Errorf("end of life of %s = %v, want %s", ch, got, want)
		}
	}
	if _, ok := channelEndOfLife("nixos-unstable"); ok {
		t.Error("nixos-unstable has an end of life")
	}
	at := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	for day, want := range map[string]string{"2026-06-15": "nixos-26.05 nixos-25.11", "2026-12-03": "nixos-26.11 nixos-26.05", "2027-03-01": "nixos-26.11"} {
		if got := strings.Join(stableCandidates(at(day)), " "); got != want {
			t.Errorf("living stable channels on %s = %q, want %q", day, got, want)
		}
	}
}

// day is a clock stopped at the start of a day (YYYY-MM-DD).
func day(t *testing.T, s string) func() time.Time {
	t.Helper()
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatal(err)
	}
	return func() time.Time { return d }
}

// TestDefaultChannelIsNewestLiving: an unset nixpkgs is the newest stable
// channel alive on the day of the build that the channel server has; a
// channel not released yet, a beta and one past its end of life are passed
// over.
func TestDefaultChannelIsNewestLiving(t *testing.T) {
	srv := channelServer(t, map[string]string{
		"nixos-24.11":    "24.11/nixos-24.11.719113.50ab793786d9",
		"nixos-25.11":    "25.11/nixos-25.11.801234.aaaaaaaaaaaa",
		"nixos-26.05":    "26.05/nixos-26.05.806273.650e572363c0",
		"nixos-27.05":    "27.05-beta/nixos-27.05beta900001.bbbbbbbbbbbb",
		"nixos-unstable": "unstable/nixos-27.05pre900001.cccccccccccc",
	})
	for today, want := range map[string]string{
		"2026-06-15": "nixos-26.05", // 26.05 and 25.11 alive: the newer
		"2026-12-03": "nixos-26.05", // 26.11 is not on the server (yet)
		"2026-01-20": "nixos-25.11", // 26.05 not released by the calendar
		"2027-05-20": "nixos-26.11", // no 26.11 on the server; 27.05 is a beta: see below
	} {
		t.Run(today, func(t *testing.T) {
			cfg := prepared(t, func(c *Config) { c.NixpkgsChannelsURL = srv.URL })
			cfg.now = day(t, today)
			ui := &testUi{}
			if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
				t.Fatal(err)
			}
			if today == "2027-05-20" {
				// 27.05 (a beta) and 26.11 (missing) are passed over and
				// the server has no other stable channel alive: the
				// newest the plugin knows, with a warning.
				if cfg.Nixpkgs != DefaultNixpkgs || !strings.Contains(strings.Join(ui.errors, "\n"), "has none of the stable channels alive on 2027-05-20 (nixos-27.05, nixos-26.11)") {
					t.Errorf("nixpkgs = %s, warnings %q", cfg.Nixpkgs, ui.errors)
				}
				return
			}
			if cfg.Nixpkgs != want || cfg.Pin() == nil || cfg.Pin().Channel != want {
				t.Fatalf("nixpkgs = %s (pin %+v), want %s", cfg.Nixpkgs, cfg.Pin(), want)
			}
			if len(ui.errors) != 0 {
				t.Errorf("warnings for a living default: %q", ui.errors)
			}
			if !strings.Contains(nixpkgsURL(cfg), "/releases/nixos/"+strings.TrimPrefix(want, "nixos-")+"/") {
				t.Errorf("the build does not use the default's release: %s", nixpkgsURL(cfg))
			}
		})
	}
}

// TestDefaultChannelServerUnreachable: without a channel server the default
// is DefaultNixpkgs, as Nix resolves it, with one warning.
func TestDefaultChannelServerUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	cfg := prepared(t, func(c *Config) { c.NixpkgsChannelsURL = srv.URL })
	cfg.now = day(t, "2026-12-03")
	ui := &testUi{}
	if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
		t.Fatal(err)
	}
	if cfg.Nixpkgs != DefaultNixpkgs || cfg.Pin() != nil || nixpkgsURL(cfg) != "channel:"+DefaultNixpkgs {
		t.Errorf("nixpkgs = %s, build uses %s", cfg.Nixpkgs, nixpkgsURL(cfg))
	}
	if len(ui.errors) != 1 || !strings.Contains(ui.errors[0], "could not ask the channel server "+srv.URL+" which stable channel is the newest") {
		t.Errorf("warnings = %q", ui.errors)
	}
}

// TestDefaultChannelPastItsEndOfLife: when the newest channel the plugin
// knows is the only one the server has, past its end of life, the build
// uses it and warns twice: none alive, and its end of life.
func TestDefaultChannelPastItsEndOfLife(t *testing.T) {
	srv := channelServer(t, map[string]string{"nixos-26.05": "26.05/nixos-26.05.806273.650e572363c0"})
	cfg := prepared(t, func(c *Config) { c.NixpkgsChannelsURL = srv.URL })
	cfg.now = day(t, "2030-02-01")
	ui := &testUi{}
	if err := cfg.PinNixpkgs(context.Background(), ui); err != nil {
		t.Fatal(err)
	}
	out := strings.Join(ui.errors, "\n")
	for _, want := range []string{"none of the stable channels alive on 2030-02-01 (nixos-29.11)", "nixos-26.05 reached its end of life on 2026-12-31"} {
		if !strings.Contains(out, want) {
			t.Errorf("warnings lack %q: %s", want, out)
		}
	}
	if cfg.Pin() == nil || cfg.Pin().Channel != "nixos-26.05" {
		t.Errorf("pin = %+v", cfg.Pin())
	}
}

// TestDefaultNixpkgsIsStable: the fallback is a stable channel.
func TestDefaultNixpkgsIsStable(t *testing.T) {
	if _, ok := channelEndOfLife(DefaultNixpkgs); !ok {
		t.Fatalf("DefaultNixpkgs %s is not a stable channel", DefaultNixpkgs)
	}
}

// TestNixpkgsReleaseURL: a release's nixexprs.tar.xz URL (a manifest's
// nixpkgs_url) is built as given, its revision read from the release's
// git-revision before the build.
func TestNixpkgsReleaseURL(t *testing.T) {
	srv := channelServer(t, nil)
	u := srv.URL + "/releases/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz"
	cfg := prepared(t, func(c *Config) { c.Nixpkgs = u })
	if err := cfg.PinNixpkgs(context.Background(), &testUi{}); err != nil {
		t.Fatal(err)
	}
	if p := cfg.Pin(); p == nil || p.URL != u || p.Revision != "650e572363c0"+strings.Repeat("0", 28) {
		t.Errorf("pin = %+v", p)
	}
	if args := strings.Join(nixArgs(cfg), " "); !strings.Contains(args, "-I nixpkgs="+u+" ") {
		t.Errorf("the build does not use the release URL: %s", args)
	}
	if v := stateVersion(u); v != "26.05" {
		t.Errorf("stateVersion = %s", v)
	}
	bad := &Config{Nixpkgs: "https://example.org/nixpkgs.tar.gz", OutputDirectory: t.TempDir() + "/out"}
	if errs := bad.Prepare("x", false); len(errs) == 0 || !strings.Contains(errs[0].Error(), "nixexprs.tar.xz URL") {
		t.Errorf("a URL that is no release's passed: %v", errs)
	}
}
