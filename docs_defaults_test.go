package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/builder"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/nixcache"
)

// The defaults and ranges the option reference states (docs-partials, made
// from the config structs' comments, and so README's and the .web-docs pages)
// are checked against what Prepare really sets and accepts.

// partialOption is one option's bullet in a docs partial.
type partialOption struct {
	file, name, text string
}

var bulletRE = regexp.MustCompile("^- `([a-z0-9_]+)` \\([^)]*\\) - (.*)")

// partialOptions reads every option bullet of docs-partials, continuation
// lines joined.
func partialOptions(t *testing.T) []partialOption {
	t.Helper()
	var opts []partialOption
	err := filepath.WalkDir("docs-partials", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".mdx") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		cur := -1
		for _, l := range strings.Split(string(b), "\n") {
			if m := bulletRE.FindStringSubmatch(l); m != nil {
				opts = append(opts, partialOption{p, m[1], m[2]})
				cur = len(opts) - 1
			} else if cur >= 0 && strings.HasPrefix(l, "  ") {
				opts[cur].text += " " + strings.TrimSpace(l)
			} else {
				cur = -1
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(opts) < 50 {
		t.Fatalf("found only %d options in docs-partials; the scan is broken", len(opts))
	}
	return opts
}

var (
	// defaultRE finds the default a bullet states: "Defaults to X" (X a
	// `value` or words up to punctuation), or "`X` (the default)", "Empty
	// (the default)".
	defaultRE     = regexp.MustCompile("Defaults to (`[^`]*`|[^;.,:]+)")
	theDefaultRE  = regexp.MustCompile("(`[^`]*`|Empty) \\(the default")
	rangeRE       = regexp.MustCompile(`\b(\d+) to (\d+)\b`)
	runTimePhrase = regexp.MustCompile(`^(the |this |a new |choosing |Debian's |AWS |the AWS SDK's )`)
)

func statedDefault(text string) (string, bool) {
	if m := defaultRE.FindStringSubmatch(text); m != nil {
		return strings.TrimSpace(m[1]), true
	}
	if m := theDefaultRE.FindStringSubmatch(text); m != nil {
		return m[1], true
	}
	return "", false
}

// shortDur writes d as the docs do: `3h`, `4h15m`, `15m`, `2s`.
func shortDur(d time.Duration) string {
	s := d.String()
	if d%time.Minute == 0 {
		s = strings.TrimSuffix(s, "0s")
	}
	if d%time.Hour == 0 {
		s = strings.TrimSuffix(s, "0m")
	}
	return "`" + s + "`"
}

func TestDocsDefaultsMatchTheCode(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	var b builder.Config
	if _, err := b.Prepare(map[string]interface{}{"region": "us-east-2", "output_directory": filepath.Join(t.TempDir(), "out")}); err != nil {
		t.Fatalf("Prepare of a minimal builder: %v", err)
	}
	var withRole builder.Config
	if _, err := withRole.Prepare(map[string]interface{}{"region": "us-east-2", "output_directory": filepath.Join(t.TempDir(), "out"),
		"assume_role": map[string]interface{}{"role_arn": "arn:aws:iam::123456789012:role/r"}}); err != nil {
		t.Fatalf("Prepare with assume_role: %v", err)
	}
	// Without keys the block is refused, after its defaults are set.
	cache := nixcache.Config{S3Bucket: "my-cache"}
	cache.Prepare()
	if cache.Pull == nil || cache.Push == nil {
		t.Fatalf("Prepare of a cache block leaves pull or push unset")
	}
	q := func(s string) string { return "`" + s + "`" }
	tf := func(v bool) string { return strconv.FormatBool(v) }
	empty := func(s string) string {
		if s == "" {
			return "Empty"
		}
		return q(s)
	}
	list := `["` + strings.Join(b.InstanceTypes, `", "`) + `"]`
	// What the code sets for an unset option, written as the docs write it;
	// "" for a default chosen at run time (the option stays unset, and the
	// docs describe the choice in words).
	want := map[string]string{
		"builder/source_ami":               "",
		"builder/debian_release":           "the newest stable release the plugin knows (" + q(b.Release().Codename) + ")",
		"builder/instance_types":           q(list),
		"builder/availability_zone":        empty(b.AvailabilityZone),
		"builder/subnet_id":                "",
		"builder/vpc_id":                   "",
		"builder/spot_price":               q(b.SpotPrice),
		"builder/spot_allocation_strategy": q(b.SpotAllocationStrategy),
		"builder/on_demand_fallback":       tf(b.OnDemandFallback),
		"builder/volume_size":              strconv.Itoa(int(b.VolumeSize)),
		"builder/volume_kms_key_id":        empty(b.VolumeKMSKeyID),
		"builder/ssh_source_cidrs":         "",
		"builder/public_ip_url":            q(b.PublicIPURL),
		"builder/ssh_interface":            q(b.SSHInterface),
		"builder/instance_max_lifetime":    shortDur(b.InstanceMaxLifetimeDuration()),
		"builder/orphan_timeout":           shortDur(b.OrphanTimeoutDuration()),
		"builder/spot_retries":             strconv.Itoa(b.SpotRetriesCount()),
		"builder/cleanup_leftovers":        tf(b.CleanupLeftovers),
		"builder/poll_interval":            shortDur(b.PollIntervalDuration()),
		"builder/state_timeout":            shortDur(b.StateTimeoutDuration()),
		"datasource/release":               "the newest stable release the plugin knows (" + q(b.Release().Codename) + ")",
		"datasource/architecture":          q("arm64"),
		"datasource/include_deprecated":    "false",
		"datasource/owners":                "",
		"awscommon/region":                 "",
		"awscommon/max_retries":            strconv.Itoa(b.MaxRetries),
		"awscommon/session_name":           q(withRole.AssumeRole.SessionName),
		"awscommon/duration":               shortDur(withRole.AssumeRoleDuration()),
		"nixcache/region":                  "",
		"nixcache/prefix":                  "",
		"nixcache/endpoint":                "",
		"nixcache/pull":                    tf(*cache.Pull),
		"nixcache/push":                    tf(*cache.Push),
		"payload/nixpkgs":                  "the newest stable channel alive on the day of the build",
		"payload/nixpkgs_channels_url":     q(b.NixpkgsChannelsURL),
		"payload/use_local_ssh_keys":       tf(*b.UseLocalSSHKeys) + " for the built-in configuration",
		"payload/hostname":                 q(b.Hostname),
		"payload/image_name":               "",
		"payload/output_directory":         q("output-<build name>"),
		"payload/decompress":               tf(*b.Decompress),
		"payload/full_output":              tf(b.FullOutput),
		"payload/keep_remote_files":        tf(b.KeepRemoteFiles),
		"payload/download_channels":        "",
		"payload/download_connections":     "",
		"payload/build_timeout":            shortDur(b.BuildTimeoutDuration()),
		"payload/remote_directory":         "",
	}
	// Run-time defaults leave the option unset.
	for key, unset := range map[string]bool{
		"builder/source_ami": b.SourceAMI == "", "builder/subnet_id": b.SubnetID == "", "builder/vpc_id": b.VpcID == "",
		"builder/ssh_source_cidrs": len(b.SSHSourceCIDRs) == 0, "payload/image_name": b.ImageName == "",
		"payload/download_channels": b.DownloadChannels == 0, "payload/download_connections": b.DownloadConnections == 0,
		"payload/remote_directory": b.RemoteDirectory == "",
	} {
		if !unset {
			t.Errorf("%s: the docs say it is chosen at run time, but Prepare sets it", key)
		}
	}
	if b.OutputDirectory == "" {
		t.Errorf("payload/output_directory: Prepare leaves it unset")
	}

	seen := map[string]bool{}
	for _, o := range partialOptions(t) {
		key := component(o.file) + "/" + o.name
		stated, ok := statedDefault(o.text)
		if !ok {
			continue
		}
		seen[key] = true
		// The channel Prepare fills in is the fallback the docs name.
		if key == "payload/nixpkgs" && !strings.Contains(o.text, q(b.Nixpkgs)+" when the server cannot be asked") {
			t.Errorf("%s: nixpkgs does not name %s as the fallback", o.file, q(b.Nixpkgs))
		}
		w, known := want[key]
		switch {
		case !known:
			t.Errorf("%s: %s states the default %q, which this test does not check against the code; add it to the table", o.file, o.name, stated)
		case w == "" && !runTimePhrase.MatchString(stated):
			t.Errorf("%s: %s states the default %q, but the code leaves it to be chosen at run time; describe the choice", o.file, o.name, stated)
		case w != "" && stated != w:
			t.Errorf("%s: %s states the default %q; the code's is %q", o.file, o.name, stated, w)
		}
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("%s: the docs state no default for it any more; update the table", key)
		}
	}
}

// component names a partial's config by its directory: builder,
// datasource, payload, nixcache, awscommon.
func component(file string) string { return filepath.Base(filepath.Dir(file)) }

// TestDocsRangesMatchTheCode: each "N to M" range an option's reference
// states is what Prepare accepts: N and M pass, M+1 fails, and N-1 fails
// unless it is 0, which the docs then call the same as unset.
func TestDocsRangesMatchTheCode(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	ints := map[string]bool{"download_channels": true, "download_connections": true, "volume_size": true, "max_retries": true}
	checked := 0
	for _, o := range partialOptions(t) {
		if !ints[o.name] {
			continue
		}
		m := rangeRE.FindStringSubmatch(o.text)
		if m == nil {
			continue
		}
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		prep := func(v int) error {
			var b builder.Config
			_, err := b.Prepare(map[string]interface{}{"region": "us-east-2", "output_directory": filepath.Join(t.TempDir(), "out"), o.name: v})
			return err
		}
		for _, v := range []int{lo, hi} {
			if err := prep(v); err != nil {
				t.Errorf("%s: %s = %d is in the stated range %d to %d, but Prepare refuses it: %v", o.file, o.name, v, lo, hi, err)
			}
		}
		if prep(hi+1) == nil {
			t.Errorf("%s: %s = %d is above the stated range %d to %d, but Prepare accepts it", o.file, o.name, hi+1, lo, hi)
		}
		if lo-1 == 0 {
			if !strings.Contains(o.text, "0 is the same as unset") {
				t.Errorf("%s: %s accepts 0 below its stated range %d to %d; say that 0 is the same as unset", o.file, o.name, lo, hi)
			}
		} else if prep(lo-1) == nil {
			t.Errorf("%s: %s = %d is below the stated range %d to %d, but Prepare accepts it", o.file, o.name, lo-1, lo, hi)
		}
		checked++
	}
	if checked < 2 {
		t.Fatalf("checked only %d stated ranges; the scan is broken", checked)
	}
}

// proseDefaultRE finds a default stated in prose next to an option's name:
// "`orphan_timeout` (15m)", "`max_retries`, default 10", "(`pull`, `push`)
// both default to true", "(by default 3h, ...)".
var proseDefaultRE = regexp.MustCompile("`([a-z][a-z0-9_]+)`[^.`]{0,40}?(?:\\(by +default +|\\(default +|,? +default +|defaults? to +|\\()(`?[0-9][0-9a-z.]*`?(?: minutes| hours)?|true|false)\\b")

// TestDocsProseDefaults: defaults the guides, README and pages state in prose
// next to an option's name are the code's too.
func TestDocsProseDefaults(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	var b builder.Config
	if _, err := b.Prepare(map[string]interface{}{"region": "us-east-2", "output_directory": filepath.Join(t.TempDir(), "out")}); err != nil {
		t.Fatalf("Prepare of a minimal builder: %v", err)
	}
	plain := func(d time.Duration) string { return strings.Trim(shortDur(d), "`") }
	want := map[string]string{
		"orphan_timeout":        plain(b.OrphanTimeoutDuration()),
		"instance_max_lifetime": plain(b.InstanceMaxLifetimeDuration()),
		"build_timeout":         plain(b.BuildTimeoutDuration()),
		"max_retries":           strconv.Itoa(b.MaxRetries),
		"spot_retries":          strconv.Itoa(b.SpotRetriesCount()),
		"volume_size":           strconv.Itoa(int(b.VolumeSize)),
		"push":                  "true",
		"pull":                  "true",
		"decompress":            strconv.FormatBool(*b.Decompress),
	}
	files := []string{"README.md"}
	for _, pat := range []string{"docs/*.md", "docs/*/*.md", "docs/*/*.mdx"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "troubleshooting.md") {
			continue // messages, generated from the source
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(raw)), " ")
		for _, m := range proseDefaultRE.FindAllStringSubmatch(text, -1) {
			w, ok := want[m[1]]
			if !ok {
				continue
			}
			found++
			t.Logf("%s: %s", f, m[0])
			got := strings.Trim(m[2], "`")
			got = strings.Replace(strings.Replace(got, " minutes", "m", 1), " hours", "h", 1)
			if got != w {
				t.Errorf("%s: %q states %s's default as %s; the code's is %s", f, m[0], m[1], got, w)
			}
		}
	}
	if found < 5 {
		t.Fatalf("found only %d defaults stated in prose; the scan is broken", found)
	}
}
