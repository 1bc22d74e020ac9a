package builder

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// prepareConfig runs Config.Prepare on a minimal valid configuration with the
// given options replaced (a nil value deletes the option). It runs in an empty
// working directory so that the default output directory never exists.
func prepareConfig(t *testing.T, opts map[string]interface{}) (*Config, []string, error) {
	t.Helper()
	t.Chdir(t.TempDir())
	raw := map[string]interface{}{
		"region":            "us-east-2",
		"packer_build_name": "rpi",
	}
	for k, v := range opts {
		if v == nil {
			delete(raw, k)
			continue
		}
		raw[k] = v
	}
	var c Config
	warnings, err := c.Prepare(raw)
	return &c, warnings, err
}

func TestConfigPrepareDefaults(t *testing.T) {
	c, warnings, err := prepareConfig(t, nil)
	if err != nil {
		t.Fatalf("Prepare of a minimal configuration failed: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"ssh_username", c.Comm.SSHUsername, "admin"},
		{"communicator", c.Comm.Type, "ssh"},
		{"ssh_timeout", c.Comm.SSHTimeout, 5 * time.Minute},
		{"instance_types", c.InstanceTypes, DefaultInstanceTypes},
		{"spot_price", c.SpotPrice, "auto"},
		{"spot_allocation_strategy", c.SpotAllocationStrategy, "price-capacity-optimized"},
		{"volume_size", c.VolumeSize, int32(30)},
		{"public_ip_url", c.PublicIPURL, "https://checkip.amazonaws.com"},
		{"ssh_interface", c.SSHInterface, "public_ip"},
		{"instance_max_lifetime", c.InstanceMaxLifetimeDuration(), 3 * time.Hour},
		{"debian_release", c.Release().Codename, "trixie"},
		{"debian_release number", c.Release().Number, 13},
		{"nixpkgs", c.Nixpkgs, "nixos-26.05"},
		{"hostname", c.Hostname, "nixos"},
		{"output_directory", c.OutputDirectory, "output-rpi"},
		{"download_channels", c.DownloadChannels, 0},
		{"download_connections", c.DownloadConnections, 0},
		{"build_timeout", c.BuildTimeoutDuration(), 2 * time.Hour},
		{"remote_directory", c.RemoteDirectory, ""},
		{"max_retries", c.MaxRetries, 10},
		{"poll_interval", c.PollIntervalDuration(), 2 * time.Second},
		{"state_timeout", c.StateTimeoutDuration(), 10 * time.Minute},
		{"on_demand_fallback", c.OnDemandFallback, false},
		{"keep_remote_files", c.KeepRemoteFiles, false},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("default %s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	if c.Decompress == nil || !*c.Decompress {
		t.Errorf("default decompress = %v, want true", c.Decompress)
	}
	// The default list must be a copy: preparing must not let one build's
	// configuration alias the package-level default.
	c.InstanceTypes[0] = "changed"
	if DefaultInstanceTypes[0] == "changed" {
		t.Errorf("instance_types default aliases DefaultInstanceTypes")
	}
}

func TestConfigPrepareDefaultInstanceTypesAreArm(t *testing.T) {
	for _, typ := range DefaultInstanceTypes {
		if !typePattern.MatchString(typ) || looksX86(typ) {
			t.Errorf("default instance type %q is not an arm64 type name", typ)
		}
	}
}

func TestConfigPrepareAcceptsValidValues(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "configuration.nix")
	if err := os.WriteFile(cfgFile, []byte("{ ... }: { }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts map[string]interface{}
		// check inspects the prepared configuration; nil checks nothing more.
		check func(t *testing.T, c *Config)
	}{
		{"graviton types", map[string]interface{}{"instance_types": []string{"t4g.large", "a1.xlarge", "im4gn.large", "x2gd.large", "g5g.xlarge", "c7gn.large", "m6gd.large"}}, nil},
		{"zone of the region", map[string]interface{}{"availability_zone": "us-east-2b"}, nil},
		{"ami id", map[string]interface{}{"source_ami": "ami-0123456789abcdef0"}, nil},
		{"unknown source_ami from packer validate", map[string]interface{}{"source_ami": "<unknown>"}, nil},
		{"debian release number", map[string]interface{}{"debian_release": "12", "nixpkgs": "nixos-25.05"}, func(t *testing.T, c *Config) {
			if c.Release().Codename != "bookworm" {
				t.Errorf("release = %+v, want bookworm", c.Release())
			}
		}},
		{"debian release codename any case", map[string]interface{}{"debian_release": "Bookworm", "nixpkgs": "nixos-25.05"}, func(t *testing.T, c *Config) {
			if c.Release().Number != 12 {
				t.Errorf("release = %+v, want 12", c.Release())
			}
		}},
		{"spot price number", map[string]interface{}{"spot_price": "0.12"}, nil},
		{"allocation strategy", map[string]interface{}{"spot_allocation_strategy": "capacity-optimized"}, nil},
		{"volume size bounds", map[string]interface{}{"volume_size": 8}, nil},
		{"volume size upper bound", map[string]interface{}{"volume_size": 16384}, nil},
		{"volume KMS alias", map[string]interface{}{"volume_kms_key_id": "alias/packer"}, nil},
		{"tags", map[string]interface{}{"tags": map[string]string{"Project": "pi", "awsome": "yes"}}, nil},
		{"cidrs", map[string]interface{}{"ssh_source_cidrs": []string{"203.0.113.7/32", "2001:db8::/64"}}, nil},
		{"public ip url http", map[string]interface{}{"public_ip_url": "http://127.0.0.1:8080/ip"}, nil},
		{"ssh interface", map[string]interface{}{"ssh_interface": "private_ip"}, nil},
		{"lifetime exactly build_timeout plus 15m", map[string]interface{}{"build_timeout": "1h", "instance_max_lifetime": "75m"}, func(t *testing.T, c *Config) {
			if c.InstanceMaxLifetimeDuration() != 75*time.Minute {
				t.Errorf("instance_max_lifetime = %s, want 75m", c.InstanceMaxLifetimeDuration())
			}
		}},
		{"long build_timeout raises the default lifetime", map[string]interface{}{"build_timeout": "4h"}, func(t *testing.T, c *Config) {
			if c.InstanceMaxLifetimeDuration() < 4*time.Hour+15*time.Minute {
				t.Errorf("instance_max_lifetime = %s, want at least build_timeout plus 15m", c.InstanceMaxLifetimeDuration())
			}
		}},
		{"nixos_config file", map[string]interface{}{"nixos_config": cfgFile}, nil},
		{"nixos_config directory", map[string]interface{}{"nixos_config": dir}, nil},
		{"remote flake", map[string]interface{}{"flake": "github:me/nixos-pi#rpi4"}, nil},
		{"ssh_username", map[string]interface{}{"ssh_username": "ubuntu"}, func(t *testing.T, c *Config) {
			if c.Comm.SSHUsername != "ubuntu" {
				t.Errorf("ssh_username = %q, want ubuntu", c.Comm.SSHUsername)
			}
		}},
		{"ec2 endpoint", map[string]interface{}{"ec2_endpoint": "http://127.0.0.1:5000"}, nil},
		{"own public key by default", map[string]interface{}{}, func(t *testing.T, c *Config) {
			if len(c.SSHAuthorizedKeys) != 1 || c.SSHAuthorizedKeys[0]+"\n" != testUserKey {
				t.Errorf("ssh_authorized_keys = %q, want the key in ~/.ssh", c.SSHAuthorizedKeys)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, warnings, err := prepareConfig(t, tc.opts)
			if err != nil {
				t.Fatalf("Prepare(%v) failed: %v", tc.opts, err)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings = %q, want none", warnings)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestConfigPrepareRejects(t *testing.T) {
	noSDKRegion(t)
	dir := t.TempDir()
	notNix := filepath.Join(dir, "configuration.txt")
	if err := os.WriteFile(notNix, []byte("{ }"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts map[string]interface{}
		// want are substrings the error must contain: the option's name and
		// what to do about it.
		want []string
	}{
		{"x86 instance type", map[string]interface{}{"instance_types": []string{"m5.large"}},
			[]string{"instance_types", `"m5.large"`, "not an AArch64", `"m7g.large"`}},
		{"x86 burstable type", map[string]interface{}{"instance_types": []string{"t3.micro"}},
			[]string{"instance_types", `"t4g.micro"`}},
		{"amd type", map[string]interface{}{"instance_types": []string{"c7a.xlarge"}},
			[]string{"instance_types", `"c7g.xlarge"`}},
		{"intel flex type", map[string]interface{}{"instance_types": []string{"m7i-flex.large"}},
			[]string{"instance_types", "not an AArch64"}},
		{"bad type name", map[string]interface{}{"instance_types": []string{"c7g 2xlarge"}},
			[]string{"instance_types", "not an instance type name", `"c7g.2xlarge"`}},
		{"duplicate type", map[string]interface{}{"instance_types": []string{"c7g.large", "m7g.large", "c7g.large"}},
			[]string{"instance_types", `"c7g.large" is listed twice`}},
		{"zone not in region", map[string]interface{}{"availability_zone": "eu-west-1a"},
			[]string{"availability_zone", `not in region "us-east-2"`, `"us-east-2a"`}},
		{"zone of a neighbouring region", map[string]interface{}{"availability_zone": "us-east-1a"},
			[]string{"availability_zone", `not in region "us-east-2"`}},
		{"region given as zone", map[string]interface{}{"availability_zone": "us-east-2"},
			[]string{"availability_zone", "not a zone name", "leave it empty"}},
		{"bad zone", map[string]interface{}{"availability_zone": "Ohio"},
			[]string{"availability_zone", "not a zone name"}},
		{"bad ami id", map[string]interface{}{"source_ami": "debian-13"},
			[]string{"source_ami", "not an AMI id", "ami-0123456789abcdef0"}},
		{"ami id upper case", map[string]interface{}{"source_ami": "ami-0123456789ABCDEF0"},
			[]string{"source_ami", "not an AMI id"}},
		{"source_ami with debian_release", map[string]interface{}{"source_ami": "ami-0123456789abcdef0", "debian_release": "bookworm"},
			[]string{"source_ami and debian_release", "one or the other"}},
		{"unknown debian_release", map[string]interface{}{"debian_release": "sarge"},
			[]string{"debian_release", `"sarge"`, "trixie"}},
		{"spot price word", map[string]interface{}{"spot_price": "cheap"},
			[]string{"spot_price", `"cheap"`, `"auto"`, `"0.12"`}},
		{"spot price zero", map[string]interface{}{"spot_price": "0"},
			[]string{"spot_price", "positive price"}},
		{"spot price negative", map[string]interface{}{"spot_price": "-0.5"},
			[]string{"spot_price", "positive price"}},
		{"spot price NaN", map[string]interface{}{"spot_price": "NaN"},
			[]string{"spot_price", "positive price"}},
		{"spot price Inf", map[string]interface{}{"spot_price": "Inf"},
			[]string{"spot_price", "positive price"}},
		{"spot price with currency", map[string]interface{}{"spot_price": "$0.12"},
			[]string{"spot_price", "positive price"}},
		{"bad allocation strategy", map[string]interface{}{"spot_allocation_strategy": "cheapest"},
			[]string{"spot_allocation_strategy", `"cheapest"`, "price-capacity-optimized", "lowest-price"}},
		{"volume too small", map[string]interface{}{"volume_size": 4},
			[]string{"volume_size", "out of range", "8 to 16384"}},
		{"volume too large", map[string]interface{}{"volume_size": 20000},
			[]string{"volume_size", "out of range"}},
		{"volume negative", map[string]interface{}{"volume_size": -1},
			[]string{"volume_size", "out of range"}},
		{"KMS key of another partition", map[string]interface{}{"volume_kms_key_id": "arn:aws-cn:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
			[]string{"volume_kms_key_id", `partition "aws-cn"`, `partition "aws"`}},
		{"KMS key not a key", map[string]interface{}{"volume_kms_key_id": "my-key"},
			[]string{"volume_kms_key_id", "not a KMS key id", "alias/packer"}},
		{"reserved aws tag", map[string]interface{}{"tags": map[string]string{"aws:owner": "me"}},
			[]string{"tags", `"aws:owner"`, "reserved", "rename"}},
		{"reserved aws tag upper case", map[string]interface{}{"tags": map[string]string{"AWS:owner": "me"}},
			[]string{"tags", "reserved"}},
		{"build id tag", map[string]interface{}{"tags": map[string]string{BuildIDTag: "x"}},
			[]string{"tags", BuildIDTag, "remove it"}},
		{"cidr prefix too long", map[string]interface{}{"ssh_source_cidrs": []string{"10.0.0.0/33"}},
			[]string{"ssh_source_cidrs", `"10.0.0.0/33"`, "not a CIDR block", "/32"}},
		{"not a cidr", map[string]interface{}{"ssh_source_cidrs": []string{"not-a-cidr"}},
			[]string{"ssh_source_cidrs", `"not-a-cidr"`}},
		{"bare address", map[string]interface{}{"ssh_source_cidrs": []string{"203.0.113.7"}},
			[]string{"ssh_source_cidrs", "not a CIDR block"}},
		{"public_ip_url without scheme", map[string]interface{}{"public_ip_url": "checkip.amazonaws.com"},
			[]string{"public_ip_url", "not an http(s) URL", "https://checkip.amazonaws.com"}},
		{"public_ip_url ftp", map[string]interface{}{"public_ip_url": "ftp://example.org/ip"},
			[]string{"public_ip_url", "not an http(s) URL", "https://checkip.amazonaws.com"}},
		{"public_ip_url without host", map[string]interface{}{"public_ip_url": "http://"},
			[]string{"public_ip_url", "not an http(s) URL", "https://checkip.amazonaws.com"}},
		{"bad ssh_interface", map[string]interface{}{"ssh_interface": "ipv6"},
			[]string{"ssh_interface", `"ipv6"`, "public_ip", "private_dns"}},
		{"lifetime shorter than build", map[string]interface{}{"instance_max_lifetime": "1h"},
			[]string{"instance_max_lifetime", "shorter than build_timeout plus 15m", "2h15m", "raise it or lower build_timeout"}},
		{"lifetime shorter than long build", map[string]interface{}{"build_timeout": "3h", "instance_max_lifetime": "3h"},
			[]string{"instance_max_lifetime", "3h15m"}},
		{"lifetime not a duration", map[string]interface{}{"instance_max_lifetime": "forever"},
			[]string{"instance_max_lifetime", `"forever"`, "positive duration"}},
		{"lifetime negative", map[string]interface{}{"instance_max_lifetime": "-3h"},
			[]string{"instance_max_lifetime", "positive duration"}},
		{"region missing", map[string]interface{}{"region": nil},
			[]string{"region: required", "us-east-2"}},
		{"region is a zone", map[string]interface{}{"region": "us-east-2a"},
			[]string{"region", "not an AWS region name"}},
		{"region display name", map[string]interface{}{"region": "US East (Ohio)"},
			[]string{"region", "not an AWS region name"}},
		{"bad subnet", map[string]interface{}{"subnet_id": "sn-123"},
			[]string{"subnet_id", "subnet-"}},
		{"bad vpc", map[string]interface{}{"vpc_id": "default"},
			[]string{"vpc_id", "vpc-"}},
		{"winrm communicator", map[string]interface{}{"communicator": "winrm"},
			[]string{"communicator", "not supported", "SSH"}},
		{"access key without secret", map[string]interface{}{"access_key": "AKIAEXAMPLE"},
			[]string{"access_key and secret_key", "both or neither"}},
		{"bad ec2_endpoint", map[string]interface{}{"ec2_endpoint": "localhost:5000"},
			[]string{"ec2_endpoint", "not an http(s) URL"}},
		{"bad poll_interval", map[string]interface{}{"poll_interval": "often"},
			[]string{"poll_interval", "positive duration"}},
		{"zero poll_interval", map[string]interface{}{"poll_interval": "0s"},
			[]string{"poll_interval", "positive duration"}},
		{"bad state_timeout", map[string]interface{}{"state_timeout": "ten minutes"},
			[]string{"state_timeout", "positive duration"}},
		// The payload's options are validated through the builder too.
		{"missing nixos_config", map[string]interface{}{"nixos_config": filepath.Join(dir, "nope.nix")},
			[]string{"nixos_config", "does not exist"}},
		{"nixos_config not nix", map[string]interface{}{"nixos_config": notNix},
			[]string{"nixos_config", "not a .nix file"}},
		{"bad build_timeout", map[string]interface{}{"build_timeout": "2 hours"},
			[]string{"build_timeout", "positive duration"}},
		{"bad nixpkgs", map[string]interface{}{"nixpkgs": "unstable"},
			[]string{"nixpkgs", `"unstable"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := prepareConfig(t, tc.opts)
			if err == nil {
				t.Fatalf("Prepare(%v) succeeded; want an error mentioning %q", tc.opts, tc.want)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestConfigPrepareReportsEveryError(t *testing.T) {
	_, _, err := prepareConfig(t, map[string]interface{}{
		"instance_types": []string{"m5.large"},
		"volume_size":    2,
		"ssh_interface":  "nope",
	})
	if err == nil {
		t.Fatal("Prepare succeeded with three bad options")
	}
	for _, w := range []string{"instance_types", "volume_size", "ssh_interface"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q; all errors must be reported at once:\n%s", w, err)
		}
	}
}

func TestConfigPrepareWarnsOnOpenSSH(t *testing.T) {
	for _, cidr := range []string{"0.0.0.0/0", "::/0", "1.2.3.4/0"} {
		t.Run(cidr, func(t *testing.T) {
			_, warnings, err := prepareConfig(t, map[string]interface{}{"ssh_source_cidrs": []string{"203.0.113.7/32", cidr}})
			if err != nil {
				t.Fatalf("Prepare failed; %s must be a warning, not an error: %v", cidr, err)
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0], "ssh_source_cidrs") || !strings.Contains(warnings[0], "whole internet") {
				t.Errorf("warnings = %q, want one about ssh_source_cidrs opening SSH to the whole internet", warnings)
			}
		})
	}
}

func TestConfigPrepareOutputDirectory(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("output-rpi", 0o755); err != nil {
		t.Fatal(err)
	}
	raw := map[string]interface{}{"region": "us-east-2", "packer_build_name": "rpi"}

	var c Config
	_, err := c.Prepare(raw)
	if err == nil || !strings.Contains(err.Error(), "output_directory") || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("Prepare with an existing output directory: err = %v, want one naming output_directory and -force", err)
	}

	var forced Config
	if _, err := forced.Prepare(raw, map[string]interface{}{"packer_force": true}); err != nil {
		t.Fatalf("Prepare with -force and an existing output directory failed: %v", err)
	}
	if !forced.Force() {
		t.Errorf("Force() = false after packer_force")
	}
}

func TestLooksX86AndGraviton(t *testing.T) {
	cases := []struct {
		typ        string
		x86        bool
		suggestion string
	}{
		{"m5.large", true, "m7g.large"},
		{"c5n.9xlarge", true, "c7g.9xlarge"},
		{"r6i.xlarge", true, "r7g.xlarge"},
		{"t2.micro", true, "t4g.micro"},
		{"g4dn.xlarge", true, "c7g.2xlarge"},
		{"inf2.xlarge", true, "c7g.2xlarge"},
		{"c7g.2xlarge", false, ""},
		{"m6gd.large", false, ""},
		{"t4g.nano", false, ""},
		{"a1.medium", false, ""},
		{"im4gn.large", false, ""},
		{"is4gen.large", false, ""},
		{"hpc7g.4xlarge", false, ""},
		{"x2gd.medium", false, ""},
	}
	for _, tc := range cases {
		if got := looksX86(tc.typ); got != tc.x86 {
			t.Errorf("looksX86(%q) = %v, want %v", tc.typ, got, tc.x86)
		}
		if tc.x86 {
			s := graviton(tc.typ)
			if s != tc.suggestion {
				t.Errorf("graviton(%q) = %q, want %q", tc.typ, s, tc.suggestion)
			}
			if looksX86(s) {
				t.Errorf("graviton(%q) suggests %q, which is not arm64 itself", tc.typ, s)
			}
		}
	}
}

func TestConfigSpotRetries(t *testing.T) {
	for _, tc := range []struct {
		value   interface{}
		want    int
		wantErr string
	}{
		{nil, 1, ""},
		{0, 0, ""},
		{3, 3, ""},
		{-1, 0, "spot_retries: -1 is out of range"},
		{11, 0, "spot_retries: 11 is out of range"},
	} {
		c, _, err := prepareConfig(t, map[string]interface{}{"spot_retries": tc.value})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("spot_retries = %v: error %v, want %q", tc.value, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("spot_retries = %v: %v", tc.value, err)
		} else if got := c.SpotRetriesCount(); got != tc.want {
			t.Errorf("spot_retries = %v: %d, want %d", tc.value, got, tc.want)
		}
	}
}

// noSDKRegion hides the machine's AWS settings, which would give a region
// the configuration lacks.
func noSDKRegion(t *testing.T) {
	t.Helper()
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// TestConfigPrepareWarnsNobodyCanLogIn: a built-in image without any key
// gets a warning, before the build, that names the option.
func TestConfigPrepareWarnsNobodyCanLogIn(t *testing.T) {
	_, warnings, err := prepareConfig(t, map[string]interface{}{"use_local_ssh_keys": false})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "nobody will be able to log in") || !strings.Contains(warnings[0], "ssh_authorized_keys") {
		t.Errorf("warnings = %q", warnings)
	}
}
