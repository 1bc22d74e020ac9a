package testbed

import (
	"bytes"
	"compress/gzip"
	"reflect"
	"testing"
)

func TestCloudConfigSSHKeys(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.Bytes()
	}
	cases := []struct {
		name string
		in   []byte
		want []string
	}{
		{"block", []byte("#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA1 a@b\n  - \"ssh-rsa AAAA2 c@d\"\nruncmd:\n  - echo hi\n"),
			[]string{"ssh-ed25519 AAAA1 a@b", "ssh-rsa AAAA2 c@d"}},
		{"same indent dashes", []byte("#cloud-config\nssh_authorized_keys:\n- 'ssh-ed25519 AAAA1 it''s'\n\n# comment\n- ssh-ed25519 AAAA3\nhostname: x\n"),
			[]string{"ssh-ed25519 AAAA1 it's", "ssh-ed25519 AAAA3"}},
		{"flow", []byte("#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAA1\", ssh-ed25519 AAAA2]\n"),
			[]string{"ssh-ed25519 AAAA1", "ssh-ed25519 AAAA2"}},
		{"users", []byte("#cloud-config\nusers:\n  - name: admin\n    ssh_authorized_keys:\n      - ssh-ed25519 AAAAU\n    sudo: ALL=(ALL) NOPASSWD:ALL\n"),
			[]string{"ssh-ed25519 AAAAU"}},
		{"gzip", gz("#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAAZ\n"), []string{"ssh-ed25519 AAAAZ"}},
		{"none", []byte("#!/bin/sh\necho ssh_authorized_keys\n"), nil},
		{"crlf", []byte("#cloud-config\r\nssh_authorized_keys:\r\n  - ssh-ed25519 AAAAC\r\n"), []string{"ssh-ed25519 AAAAC"}},
	}
	for _, c := range cases {
		if got := CloudConfigSSHKeys(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestIsImmediateShutdown(t *testing.T) {
	cases := map[string]bool{
		"shutdown -P now":                  true,
		"shutdown -h now":                  true,
		"shutdown -P now nixos-sd:\\ lost": true,
		"shutdown +0":                      true,
		"poweroff":                         true,
		"halt -p":                          true,
		"shutdown -P +180 packer-nixos-sd": false,
		"shutdown -P \\+90":                false,
		"shutdown -c":                      false,
		"shutdown --help":                  false,
		"reboot":                           false,
		"shutdown -P 23:00":                false,
	}
	for call, want := range cases {
		if got := isImmediateShutdown(call); got != want {
			t.Errorf("isImmediateShutdown(%q) = %v, want %v", call, got, want)
		}
	}
}
