package testbed

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

func TestParseUserData(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	cases := []struct {
		name    string
		in      []byte
		keys    []string
		runcmd  string
		ignored bool // nil config: cloud-init ignores it
		warn    string
		err     string
	}{
		{name: "block", in: []byte("#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA1 a@b\n  - \"ssh-rsa AAAA2 c@d\"\n"),
			keys: []string{"ssh-ed25519 AAAA1 a@b", "ssh-rsa AAAA2 c@d"}},
		{name: "flow", in: []byte("#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAA1\", ssh-ed25519 AAAA2]\n"),
			keys: []string{"ssh-ed25519 AAAA1", "ssh-ed25519 AAAA2"}},
		{name: "gzip", in: gz("#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAAZ\n"), keys: []string{"ssh-ed25519 AAAAZ"}},
		{name: "crlf", in: []byte("#cloud-config\r\nssh_authorized_keys:\r\n  - ssh-ed25519 AAAAC\r\n"), keys: []string{"ssh-ed25519 AAAAC"}},
		{name: "runcmd", in: []byte("#cloud-config\nruncmd:\n  - [shutdown, -P, \"+16\", \"it's: done\"]\n  - echo $HOME > /run/x\n"),
			runcmd: "#!/bin/sh\n'shutdown' '-P' '+16' 'it'\\''s: done'\necho $HOME > /run/x\n"},
		{name: "runcmd numbers", in: []byte("#cloud-config\nruncmd:\n  - [sleep, 5]\n"), runcmd: "#!/bin/sh\n'sleep' '5'\n"},
		{name: "runcmd bad item", in: []byte("#cloud-config\nruncmd:\n  - {a: b}\n"), warn: "unable to shellify"},
		{name: "empty", in: nil, ignored: true},
		{name: "no header", in: []byte("ssh_authorized_keys:\n  - ssh-ed25519 AAAA1\n"), warn: "Unhandled non-multipart"},
		{name: "header not first", in: []byte("\n#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA1\n"), warn: "Unhandled non-multipart"},
		{name: "bad yaml", in: []byte("#cloud-config\nssh_authorized_keys: [\n"), warn: "Failed loading yaml"},
		{name: "not a mapping", in: []byte("#cloud-config\n- a\n"), warn: "Failed loading yaml"},
		{name: "keys not a list", in: []byte("#cloud-config\nssh_authorized_keys: ssh-ed25519 AAAA1\n"), warn: "not a list of strings"},
		{name: "script", in: []byte("#!/bin/sh\necho hi\n"), err: "plays #cloud-config only"},
		{name: "mime", in: []byte("Content-Type: multipart/mixed; boundary=x\n"), err: "plays #cloud-config only"},
		{name: "unplayed key", in: []byte("#cloud-config\nwrite_files:\n  - path: /x\n"), err: "does not play: write_files"},
		{name: "users", in: []byte("#cloud-config\nusers:\n  - name: admin\n"), err: "does not play: users"},
	}
	for _, c := range cases {
		cc, err := parseUserData(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.ignored {
			if cc != nil {
				t.Errorf("%s: config %+v, want none", c.name, cc)
			}
			continue
		}
		if !slices.Equal(cc.AuthorizedKeys, c.keys) {
			t.Errorf("%s: keys %q, want %q", c.name, cc.AuthorizedKeys, c.keys)
		}
		if cc.RunCmd != c.runcmd {
			t.Errorf("%s: runcmd %q, want %q", c.name, cc.RunCmd, c.runcmd)
		}
		if got := strings.Join(cc.Warnings, "\n"); (c.warn == "") != (got == "") || !strings.Contains(got, c.warn) {
			t.Errorf("%s: warnings %q, want %q", c.name, got, c.warn)
		}
	}
}

// applySSH: ssh_deletekeys removes the image's own host keys, ssh_keys puts
// the given ones in place (deriving a missing public half), and no other
// type is generated next to them.
func TestCloudInitHostKeys(t *testing.T) {
	pair, err := hostkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	ud := "#cloud-config\nssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n" +
		indent(string(pair.PrivatePEM), "    ") + "  dsa_private: skipped\n"
	cc, err := parseUserData([]byte(ud))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("pristine"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.applySSH(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"}; !slices.Equal(names, want) {
		t.Errorf("key folder holds %q, want %q", names, want)
	}
	priv, _ := os.ReadFile(filepath.Join(dir, "ssh_host_ed25519_key"))
	if !bytes.Equal(priv, pair.PrivatePEM) {
		t.Errorf("private key = %q", priv)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "ssh_host_ed25519_key.pub"))
	if !strings.HasPrefix(string(pub), hostkey.AuthorizedLine(pair.Public)+" ") {
		t.Errorf("derived public key = %q, want %q", pub, hostkey.AuthorizedLine(pair.Public))
	}

	// ssh_deletekeys: false keeps the image's keys; without ssh_keys the
	// missing ssh_genkeytypes are generated.
	cc, err = parseUserData([]byte("#cloud-config\nssh_deletekeys: false\nssh_genkeytypes: [ed25519, ecdsa]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.applySSH(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ssh_host_ed25519_key")); !bytes.Equal(got, pair.PrivatePEM) {
		t.Error("ssh_deletekeys: false replaced an existing key")
	}
	if _, err := os.Stat(filepath.Join(dir, "ssh_host_ecdsa_key")); err != nil {
		t.Errorf("ecdsa key not generated: %v", err)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}
