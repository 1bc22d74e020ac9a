package payload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// DefaultChannelsURL is the NixOS channel server.
const DefaultChannelsURL = "https://channels.nixos.org"

// ChannelPin is a channel resolved, before the build, to the release it
// points at: the build uses URL, so a channel that moves during the build
// does not change what is built.
type ChannelPin struct {
	// Channel is the channel's name, such as nixos-26.05.
	Channel string
	// Release is the release's URL the channel server redirected to, such
	// as https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0.
	Release string
	// URL is the release's nixexprs.tar.xz, what `-I nixpkgs=` names.
	URL string
	// Revision is the release's git-revision file: the full revision.
	Revision string
	// Version is nixpkgs' lib.version of the release (from its name).
	Version string
}

// releasePattern matches a release's name: nixos-26.05.806273.650e572363c0,
// nixos-26.11pre806273.650e572363c0; its second group is lib.version and
// its third the short revision.
var releasePattern = regexp.MustCompile(`^(nixos|nixpkgs)-([0-9]{2}\.[0-9]{2}(?:pre|\.)[0-9]+\.([0-9a-f]{7,40}))$`)

// channelNotFoundError is a channel the channel server does not have.
type channelNotFoundError struct{ channel, server string }

func (e *channelNotFoundError) Error() string {
	return fmt.Sprintf("channel %s does not exist on %s", e.channel, e.server)
}

// channelClient asks the channel server; every request has its own timeout.
var channelClient = &http.Client{Timeout: 20 * time.Second}

// channelGet GETs u, stopping at a redirect to a release. It returns the
// response (nil at a release) and the release's URL.
func channelGet(ctx context.Context, u string) (*http.Response, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	var release *url.URL
	c := *channelClient
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if releasePattern.MatchString(path.Base(strings.TrimSuffix(r.URL.Path, "/"))) {
			release = r.URL
			return http.ErrUseLastResponse
		}
		if len(via) >= 10 {
			return errors.New("more than 10 redirects; check that nixpkgs_channels_url is a NixOS channel server")
		}
		return nil
	}
	resp, err := c.Do(req)
	return resp, release, err
}

// resolveChannel asks the channel server at base which release channel
// points at now, and that release's revision.
func resolveChannel(ctx context.Context, base, channel string) (*ChannelPin, error) {
	base = strings.TrimSuffix(base, "/")
	u := base + "/" + channel
	resp, release, err := channelGet(ctx, u)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, &channelNotFoundError{channel: channel, server: base}
	}
	if release == nil {
		return nil, fmt.Errorf("%s answered %s, not a redirect to a release; check that nixpkgs_channels_url is a NixOS channel server", u, resp.Status)
	}
	pin, err := pinRelease(ctx, strings.TrimSuffix(release.String(), "/"))
	if pin != nil {
		pin.Channel = channel
	}
	return pin, err
}

// pinRelease reads the git-revision of the release at rel, whose name
// (releasePattern) gives its version and short revision.
func pinRelease(ctx context.Context, rel string) (*ChannelPin, error) {
	m := releasePattern.FindStringSubmatch(path.Base(rel))
	if m == nil {
		return nil, fmt.Errorf("%s is not named as a NixOS release (such as nixos-26.05.806273.650e572363c0); check that nixpkgs_channels_url is a NixOS channel server", rel)
	}
	rev, err := channelFile(ctx, rel+"/git-revision")
	if err != nil {
		return nil, err
	}
	if !revisionPattern.MatchString(rev) || !strings.HasPrefix(rev, m[3]) {
		return nil, fmt.Errorf("%s/git-revision holds %q, not the revision %s... the release is named after; check that nixpkgs_channels_url is a NixOS channel server", rel, rev, m[3])
	}
	return &ChannelPin{Release: rel, URL: rel + "/nixexprs.tar.xz", Revision: rev, Version: m[2]}, nil
}

// releaseOfURL is the release directory of a release's nixexprs.tar.xz URL
// (https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz)
// and its lib.version; ok is false for anything else.
func releaseOfURL(s string) (release, version string, ok bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || path.Base(u.Path) != "nixexprs.tar.xz" {
		return "", "", false
	}
	m := releasePattern.FindStringSubmatch(path.Base(path.Dir(u.Path)))
	if m == nil {
		return "", "", false
	}
	return strings.TrimSuffix(s, "/nixexprs.tar.xz"), m[2], true
}

// channelFile is the trimmed content of a small file of a release.
func channelFile(ctx context.Context, u string) (string, error) {
	resp, _, err := channelGet(ctx, u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return strings.TrimSpace(string(b)), err
}

// PinNixpkgs fixes, before the build, the release a nixpkgs channel points
// at (see ChannelPin), and checks the channel: one the channel server does
// not have is an error naming the living ones; one past its end of life, or
// a server that cannot be asked, is a warning (the build then uses the
// channel as Nix resolves it). A flake or a revision needs nothing.
func (c *Config) PinNixpkgs(ctx context.Context, ui packersdk.Ui) error {
	if c.pinned || c.Flake != "" || revisionPattern.MatchString(c.Nixpkgs) {
		return nil
	}
	c.pinned = true
	if rel, _, ok := releaseOfURL(c.Nixpkgs); ok {
		pin, err := pinRelease(ctx, rel)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ui.Error(fmt.Sprintf("Warning: nixpkgs: could not read the git-revision of %s (%v); the build uses it as given, and the manifest records the revision Nix reports after the build", rel, err))
			return nil
		}
		c.pin = pin
		ui.Say(fmt.Sprintf("nixpkgs is release %s (revision %s)", path.Base(rel), pin.Revision))
		return nil
	}
	now := c.today()
	server := c.channelsURL()
	if c.nixpkgsDefault {
		done, err := c.pinDefault(ctx, ui, server, now)
		if done || err != nil {
			return err
		}
	}
	if eol, ok := channelEndOfLife(c.Nixpkgs); ok && now.After(eol) {
		ui.Error(fmt.Sprintf("Warning: nixpkgs: %s reached its end of life on %s and gets no security fixes any more; use a living channel such as %s", c.Nixpkgs, eol.Format(time.DateOnly), newestStable(now)))
	}
	pin, err := resolveChannel(ctx, server, c.Nixpkgs)
	var nf *channelNotFoundError
	switch {
	case errors.As(err, &nf):
		living := livingChannels(ctx, server, now)
		c.pinned = false
		return fmt.Errorf("nixpkgs: channel %q does not exist on %s; the living channels are %s. Set nixpkgs to one of them (or to a 40-hex-digit nixpkgs revision)", c.Nixpkgs, server, strings.Join(living, ", "))
	case err != nil:
		if ctx.Err() != nil {
			c.pinned = false
			return ctx.Err()
		}
		ui.Error(fmt.Sprintf("Warning: nixpkgs: could not ask the channel server which release %s is (%v); the build uses channel:%s as Nix resolves it, and the manifest records the revision Nix reports after the build", c.Nixpkgs, err, c.Nixpkgs))
	default:
		c.pin = pin
		ui.Say(fmt.Sprintf("nixpkgs %s is release %s (revision %s); the build uses %s", c.Nixpkgs, path.Base(pin.Release), pin.Revision, pin.URL))
	}
	return nil
}

// pinDefault makes an unset nixpkgs the newest stable channel alive at now
// on the channel server, pinned to its release. When the server cannot be
// asked the build keeps DefaultNixpkgs, with a warning, and done is true;
// when it has none of the calendar's channels, done is false and PinNixpkgs
// goes on with DefaultNixpkgs.
func (c *Config) pinDefault(ctx context.Context, ui packersdk.Ui, server string, now time.Time) (done bool, err error) {
	pin, reached, err := newestLiving(ctx, server, now)
	switch {
	case pin != nil:
		c.Nixpkgs, c.pin = pin.Channel, pin
		ui.Say(fmt.Sprintf("nixpkgs is not set: %s is the newest stable channel on %s, release %s (revision %s); the build uses %s", pin.Channel, server, path.Base(pin.Release), pin.Revision, pin.URL))
		return true, nil
	case ctx.Err() != nil:
		c.pinned = false
		return true, ctx.Err()
	case !reached:
		ui.Error(fmt.Sprintf("Warning: nixpkgs: could not ask the channel server %s which stable channel is the newest (%v); the build uses %s, the newest the plugin knows, as channel:%s as Nix resolves it, and the manifest records the revision Nix reports after the build. Set nixpkgs to choose the channel", server, err, DefaultNixpkgs, DefaultNixpkgs))
		return true, nil
	}
	ui.Error(fmt.Sprintf("Warning: nixpkgs: the channel server %s has none of the stable channels alive on %s (%s); the build uses %s, the newest the plugin knows. Set nixpkgs to choose the channel", server, now.Format(time.DateOnly), strings.Join(stableCandidates(now), ", "), DefaultNixpkgs))
	return false, nil
}

// today is the day of the build, as c.now tells it.
func (c *Config) today() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Pin is the release PinNixpkgs fixed, nil when none was.
func (c *Config) Pin() *ChannelPin { return c.pin }

func (c *Config) channelsURL() string {
	if c.NixpkgsChannelsURL == "" {
		return DefaultChannelsURL
	}
	return strings.TrimSuffix(c.NixpkgsChannelsURL, "/")
}
