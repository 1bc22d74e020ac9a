package builder

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validationRule is one rule `packer validate` enforces: the option, the
// rule as docs/validation.md states it, a configuration that breaks it and
// what the refusal must say (besides the option's name and the value).
type validationRule struct {
	option, rule string
	opts         map[string]interface{}
	value        string // the offending value, which the refusal must quote ("" when there is none)
	want         string
}

// validationRules holds one case per rule of Config.Prepare (the builder's
// own options, payload.Config's and awscommon.AccessConfig's). Relative paths
// are inside the tree validationTree makes.
func validationRules() []validationRule {
	many := func(prefix string, n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("%s%02d", prefix, i)] = "x"
		}
		return m
	}
	long := strings.Repeat("k", 129)
	return []validationRule{
		{"region", "an AWS region name, not a zone", map[string]interface{}{"region": "us-east-2a"}, "us-east-2a", "not an AWS region name"},
		{"access_key and secret_key", "both or neither", map[string]interface{}{"access_key": "AKIAEXAMPLE"}, "", "set both or neither"},
		{"communicator", "SSH only", map[string]interface{}{"communicator": "winrm"}, "winrm", "is not supported"},
		{"source_ami", "an AMI id (ami- and 8 or 17 hex digits)", map[string]interface{}{"source_ami": "ami-xyz"}, "ami-xyz", "is not an AMI id"},
		{"source_ami and debian_release", "one or the other", map[string]interface{}{"source_ami": "ami-0123456789abcdef0", "debian_release": "trixie"}, "", "set one or the other"},
		{"debian_release", "a release the plugin knows (10 to 14, by number or codename)", map[string]interface{}{"debian_release": "sarge"}, "sarge", "unknown Debian release"},
		{"debian_release", "a release with a nix-bin package (12 or newer)", map[string]interface{}{"debian_release": "bullseye"}, "bullseye", "has no nix-bin package"},
		{"debian_release", "its nix-bin is at least the Nix the chosen nixpkgs needs (lib/minver.nix: 2.18 from nixos-25.11 on and in the unstable channels, so not Debian 12's 2.8)", map[string]interface{}{"debian_release": "bookworm", "nixpkgs": "nixos-26.05"}, "2.8.0", "older than nixpkgs \"nixos-26.05\" needs (Nix >= 2.18"},
		{"instance_types", "names of the form family.size", map[string]interface{}{"instance_types": []string{"c7g"}}, "c7g", "is not an instance type name"},
		{"instance_types", "no empty name", map[string]interface{}{"instance_types": []string{""}}, "", "is not an instance type name"},
		{"instance_types", "arm64 (Graviton) types only", map[string]interface{}{"instance_types": []string{"m5.large"}}, "m5.large", "is not an AArch64 (Graviton) type"},
		{"instance_types", "no type twice", map[string]interface{}{"instance_types": []string{"c7g.large", "c7g.large"}}, "c7g.large", "is listed twice"},
		{"availability_zone", "a zone name", map[string]interface{}{"availability_zone": "east"}, "east", "is not a zone name"},
		{"availability_zone", "a zone of region", map[string]interface{}{"availability_zone": "eu-west-1a"}, "eu-west-1a", "is not in region"},
		{"subnet_id", "a subnet id", map[string]interface{}{"subnet_id": "subnet-1"}, "subnet-1", "is not a subnet id"},
		{"vpc_id", "a VPC id", map[string]interface{}{"vpc_id": "vpc-1"}, "vpc-1", "is not a VPC id"},
		{"vpc_id", "not with subnet_id (the subnet's VPC is used)", map[string]interface{}{"vpc_id": "vpc-0123456789abcdef0", "subnet_id": "subnet-0123456789abcdef0"}, "vpc-0123456789abcdef0", "is set with subnet_id"},
		{"spot_price", "auto or a positive decimal number of US dollars per hour", map[string]interface{}{"spot_price": "1e3"}, "1e3", "is neither \"auto\" nor a positive price"},
		{"spot_allocation_strategy", "one of EC2 Fleet's strategies", map[string]interface{}{"spot_allocation_strategy": "cheapest"}, "cheapest", "is not one of"},
		{"volume_size", "8 to 16384 GiB (gp3)", map[string]interface{}{"volume_size": 4}, "4 GiB", "is out of range"},
		{"volume_kms_key_id", "a KMS key id, alias/name, or a key or alias ARN", map[string]interface{}{"volume_kms_key_id": "my-key"}, "my-key", "is not a KMS key id"},
		{"volume_kms_key_id", "an ARN of the region's partition and of the region itself", map[string]interface{}{"volume_kms_key_id": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, "us-east-1", "use a key of the volume's own region"},
		{"source_ami", "required in the China and GovCloud partitions (no Debian account known there)", map[string]interface{}{"region": "cn-north-1"}, "cn-north-1", "partition aws-cn"},
		{"tags", "keys not beginning with aws: (reserved by AWS)", map[string]interface{}{"tags": map[string]string{"aws:team": "x"}}, "aws:team", "reserved aws: prefix"},
		{"tags", "not the plugin's own keys", map[string]interface{}{"tags": map[string]string{"nixos-sd:build-id": "x"}}, "nixos-sd:build-id", "is set by the plugin"},
		{"tags", "keys of at most 128 characters", map[string]interface{}{"tags": map[string]string{long: "x"}}, long, "EC2 allows at most 128"},
		{"tags", "no empty key", map[string]interface{}{"tags": map[string]string{" ": "x"}}, "", "empty key"},
		{"tags", "values of at most 256 characters", map[string]interface{}{"tags": map[string]string{"team": strings.Repeat("v", 257)}}, "team", "EC2 allows at most 256"},
		{"run_tags", "the same key rules as tags", map[string]interface{}{"run_tags": map[string]string{"AWS:x": "y"}}, "AWS:x", "reserved aws: prefix"},
		{"tags and run_tags", "at most 50 tags on the instance, counting Name and the plugin's nixos-sd:build-id and nixos-sd:expires", map[string]interface{}{"tags": many("a", 24), "run_tags": many("b", 24)}, "51 tags", "EC2 allows 50 per resource, so remove 1"},
		{"ssh_source_cidrs", "CIDR blocks", map[string]interface{}{"ssh_source_cidrs": []string{"203.0.113.7"}}, "203.0.113.7", "is not a CIDR block"},
		{"ssh_source_cidrs", "no empty entry", map[string]interface{}{"ssh_source_cidrs": []string{""}}, "", "is not a CIDR block"},
		{"public_ip_url", "an http(s) URL", map[string]interface{}{"public_ip_url": "ftp://example.org"}, "ftp://example.org", "is not an http(s) URL"},
		{"ssh_interface", "public_ip, private_ip, public_dns or private_dns", map[string]interface{}{"ssh_interface": "ipv6"}, "ipv6", "is not one of"},
		{"instance_max_lifetime", "a positive duration", map[string]interface{}{"instance_max_lifetime": "forever"}, "forever", "is not a positive duration"},
		{"instance_max_lifetime", "at least build_timeout plus 15m", map[string]interface{}{"instance_max_lifetime": "1h", "build_timeout": "1h"}, "1h0m0s", "is shorter than build_timeout plus 15m"},
		{"orphan_timeout", "at least 1m", map[string]interface{}{"orphan_timeout": "30s"}, "30s", "is too short"},
		{"spot_retries", "0 to 10", map[string]interface{}{"spot_retries": 11}, "11", "is out of range"},
		{"poll_interval", "a positive duration", map[string]interface{}{"poll_interval": "often"}, "often", ""},
		{"nixos_config", "an existing file or directory", map[string]interface{}{"nixos_config": "missing.nix"}, "missing.nix", "does not exist"},
		{"nixos_config", "a directory holds configuration.nix", map[string]interface{}{"nixos_config": "empty"}, "empty", "has no configuration.nix"},
		{"nixos_config", "a .nix file", map[string]interface{}{"nixos_config": "notes.txt"}, "notes.txt", "is not a .nix file"},
		{"nixos_config", "no SSH key that is not one (the placeholder of a copied example)", map[string]interface{}{"nixos_config": "placeholder/configuration.nix"}, "configuration.nix:1", "not a real SSH public key"},
		{"nixos_config and flake", "one or the other", map[string]interface{}{"nixos_config": "cfg", "flake": "github:me/pi#rpi"}, "", "set one or the other"},
		{"flake", "a reference and a nixosConfigurations attribute after '#'", map[string]interface{}{"flake": "github:me/pi"}, "github:me/pi", "must be a flake reference and a nixosConfigurations attribute"},
		{"flake", "not beginning with '-' (Nix would read an option)", map[string]interface{}{"flake": "--impure#rpi"}, "--impure#rpi", "command-line option"},
		{"flake", "a ./, ../ or path: directory exists", map[string]interface{}{"flake": "./missing#rpi"}, "./missing", "does not exist"},
		{"flake", "a local directory holds flake.nix", map[string]interface{}{"flake": "./empty#rpi"}, "./empty", "has no flake.nix"},
		{"flake", "no git+file: or file: reference (the build host cannot read this machine's files)", map[string]interface{}{"flake": "git+file:///srv/pi#rpi"}, "git+file:///srv/pi#rpi", "cannot read"},
		{"hostname", "not with flake (a flake is built as written)", map[string]interface{}{"flake": "./flake#rpi", "hostname": "pi"}, "pi", "is set with flake"},
		{"ssh_authorized_keys", "not with flake", map[string]interface{}{"flake": "./flake#rpi", "ssh_authorized_keys": []string{testKeyLine}}, "", "set with flake"},
		{"use_local_ssh_keys", "not true with flake", map[string]interface{}{"flake": "./flake#rpi", "use_local_ssh_keys": true}, "", "true with flake"},
		{"nixpkgs", "not with flake (flake.lock pins it)", map[string]interface{}{"flake": "./flake#rpi", "nixpkgs": "nixos-26.05"}, "nixos-26.05", "pins its own nixpkgs"},
		{"nixpkgs", "a nixos-*/nixpkgs-* channel, a 40-hex-digit revision, or a release's `nixexprs.tar.xz` URL (`https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz`)", map[string]interface{}{"nixpkgs": "26.05"}, "26.05", "is neither a channel, a nixpkgs revision nor a release's nixexprs.tar.xz URL"},
		{"nixpkgs_channels_url", "an http(s) URL", map[string]interface{}{"nixpkgs_channels_url": "ftp://channels.example.org"}, "ftp://channels.example.org", "is not an http(s) URL"},
		{"ssh_authorized_keys", "no empty entry", map[string]interface{}{"ssh_authorized_keys": []string{""}}, "", "is empty"},
		{"ssh_authorized_keys", "whole OpenSSH public keys (a placeholder is not one)", map[string]interface{}{"ssh_authorized_keys": []string{"ssh-ed25519 AAAA... you@laptop"}}, "ssh-ed25519 AAAA... you@laptop", "is not an OpenSSH public key line"},
		{"ssh_authorized_keys", "one key per entry", map[string]interface{}{"ssh_authorized_keys": []string{testKeyLine + "\n" + testKeyLine}}, "", "more than one line"},
		{"hostname", "letters, digits and '-', at most 63", map[string]interface{}{"hostname": "my_pi"}, "my_pi", "is not a valid host name"},
		{"nix_options", "setting names (not options such as -L)", map[string]interface{}{"nix_options": map[string]string{"-L": "x"}}, "-L", "is not a Nix setting name"},
		{"nix_options", "no empty value", map[string]interface{}{"nix_options": map[string]string{"max-jobs": ""}}, "max-jobs", "has an empty value"},
		{"image_name", "a plain file name", map[string]interface{}{"image_name": "out/pi.img"}, "out/pi.img", "must be a plain file name"},
		{"image_name", "no .zst with decompress", map[string]interface{}{"image_name": "pi.img.zst"}, "pi.img.zst", "ends in .zst"},
		{"output_directory", "does not exist (unless -force)", map[string]interface{}{"output_directory": "used"}, "used", "already exists"},
		{"download_channels", "0 (choose) or 1 to 32", map[string]interface{}{"download_channels": 33}, "33", "is out of range"},
		{"download_connections", "0 (choose) or 1 to 16", map[string]interface{}{"download_connections": 17}, "17", "is out of range"},
		{"build_timeout", "a positive duration", map[string]interface{}{"build_timeout": "-1h"}, "-1h", "is not a positive duration"},
		{"remote_directory", "an absolute path without shell characters", map[string]interface{}{"remote_directory": "tmp/x"}, "tmp/x", "must be an absolute path"},
		{"remote_directory", "at least two levels deep, without ..", map[string]interface{}{"remote_directory": "/tmp"}, "/tmp", "must be a directory of its own"},
	}
}

// testKeyLine is a real OpenSSH public key line.
const testKeyLine = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 me@laptop"

// validationTree makes the files the rules name, in a new current directory.
func validationTree(t *testing.T) {
	t.Helper()
	t.Chdir(t.TempDir())
	for _, d := range []string{"empty", "cfg", "flake", "placeholder", "used"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"cfg/configuration.nix":         "{ }\n",
		"flake/flake.nix":               "{ outputs = _: { }; }\n",
		"notes.txt":                     "not nix\n",
		"placeholder/configuration.nix": "{ users.users.root.openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERreplaceWithYourOwnKeyXXXXXXXXXXXX you@example\" ]; }\n",
		"used/nixos-sd.img":             "an earlier image\n",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestValidationRules: every rule refuses its case at Prepare (what `packer
// validate` runs), naming the option and the value; docs/validation.md lists
// exactly these rules (NIXOS_SD_UPDATE_VALIDATION=1 rewrites the list).
func TestValidationRules(t *testing.T) {
	doc, err := filepath.Abs(filepath.FromSlash(validationDoc))
	if err != nil {
		t.Fatal(err)
	}
	validationTree(t)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	for _, r := range validationRules() {
		t.Run(r.option+"/"+r.rule, func(t *testing.T) {
			raw := map[string]interface{}{"region": "us-east-2", "packer_build_name": "rpi", "ssh_source_cidrs": []string{"198.51.100.7/32"}}
			if _, ok := r.opts["public_ip_url"]; ok {
				delete(raw, "ssh_source_cidrs")
			}
			for k, v := range r.opts {
				raw[k] = v
			}
			var c Config
			_, err := c.Prepare(raw)
			if err == nil {
				t.Fatalf("Prepare accepted %v", r.opts)
			}
			msg := err.Error()
			if !strings.Contains(msg, r.option+": ") && !strings.Contains(msg, r.option+"[") {
				t.Errorf("the refusal does not name %s:\n%s", r.option, msg)
			}
			if r.value != "" && !strings.Contains(msg, r.value) {
				t.Errorf("the refusal does not quote the value %q:\n%s", r.value, msg)
			}
			if !strings.Contains(msg, r.want) {
				t.Errorf("the refusal does not say %q:\n%s", r.want, msg)
			}
		})
	}
	checkValidationDoc(t, doc, validationRules())
}

// validationDoc is docs/validation.md; its rule list sits between these
// markers.
const (
	validationDoc   = "../docs/validation.md"
	validationBegin = "<!-- rules:begin (generated from builder/validation_test.go: NIXOS_SD_UPDATE_VALIDATION=1 go test -run TestValidationRules ./builder/) -->\n"
	validationEnd   = "<!-- rules:end -->\n"
)

func checkValidationDoc(t *testing.T, path string, rules []validationRule) {
	t.Helper()
	var b strings.Builder
	b.WriteString("| option | rule |\n| --- | --- |\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "| `%s` | %s |\n", r.option, strings.ReplaceAll(r.rule, "|", `\|`))
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, validationBegin), strings.Index(s, validationEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", validationDoc, validationBegin, validationEnd)
	}
	want := s[:i+len(validationBegin)] + b.String() + s[j:]
	if want == s {
		return
	}
	if os.Getenv("NIXOS_SD_UPDATE_VALIDATION") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s does not list the rules of validationRules; run NIXOS_SD_UPDATE_VALIDATION=1 go test -run TestValidationRules ./builder/", validationDoc)
}
