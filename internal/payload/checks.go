package payload

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// explicit records which options the template set, before Prepare fills in
// defaults: some apply only to one kind of configuration.
type explicit struct {
	hostname, nixpkgs, localKeys bool
}

// checkCombinations refuses options the chosen configuration would ignore:
// a flake is built as written, so nothing of the plugin's reaches it.
func (c *Config) checkCombinations(set explicit) []error {
	if c.Flake == "" {
		return nil
	}
	var errs []error
	why := "a flake is built as written, so the plugin cannot add it; set it in the flake's configuration and remove it here"
	if set.hostname {
		errs = append(errs, fmt.Errorf("hostname: %q is set with flake; %s (networking.hostName)", c.Hostname, why))
	}
	if len(c.SSHAuthorizedKeys) > 0 {
		errs = append(errs, fmt.Errorf("ssh_authorized_keys: set with flake; %s (users.users.<name>.openssh.authorizedKeys.keys)", why))
	}
	if set.localKeys {
		errs = append(errs, fmt.Errorf("use_local_ssh_keys: true with flake; %s (users.users.<name>.openssh.authorizedKeys.keys)", why))
	}
	if set.nixpkgs {
		errs = append(errs, fmt.Errorf("nixpkgs: %q is set with flake, which pins its own nixpkgs in flake.lock; change the flake's nixpkgs input and remove nixpkgs here", c.Nixpkgs))
	}
	return errs
}

// checkKeys checks ssh_authorized_keys: one real OpenSSH public key per entry.
func (c *Config) checkKeys() []error {
	var errs []error
	for i, k := range c.SSHAuthorizedKeys {
		switch {
		case strings.TrimSpace(k) == "":
			errs = append(errs, fmt.Errorf("ssh_authorized_keys[%d]: is empty; remove the entry or paste the contents of your ~/.ssh/id_*.pub", i))
		case strings.ContainsAny(strings.TrimSpace(k), "\r\n"):
			errs = append(errs, fmt.Errorf("ssh_authorized_keys[%d]: holds more than one line; give one key per list entry", i))
		default:
			if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
				errs = append(errs, fmt.Errorf("ssh_authorized_keys[%d]: %q is not an OpenSSH public key line (\"ssh-ed25519 AAAA... comment\" with the whole key; a placeholder is not one); paste the contents of your ~/.ssh/id_*.pub", i, abbrev(k)))
			}
		}
	}
	return errs
}

// checkNixOptions checks nix_options: names Nix knows the form of, and values.
func (c *Config) checkNixOptions() []error {
	var errs []error
	for k, v := range c.NixOptions {
		switch {
		case k == "" || strings.ContainsAny(k, " \t\n=") || strings.HasPrefix(k, "-"):
			errs = append(errs, fmt.Errorf("nix_options: %q is not a Nix setting name; use names such as \"extra-substituters\" or \"max-jobs\"", k))
		case strings.TrimSpace(v) == "":
			errs = append(errs, fmt.Errorf("nix_options: %q has an empty value; give it a value or remove it", k))
		case strings.ContainsAny(v, "\r\n"):
			errs = append(errs, fmt.Errorf("nix_options: the value of %q holds a line break; give a list as values separated by spaces", k))
		}
	}
	return errs
}

// keyLiteral is an SSH public key as it appears in a Nix file.
var keyLiteral = regexp.MustCompile(`(ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp[0-9]+|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) (AAAA[A-Za-z0-9+/=.]*)`)

// checkConfigKeys refuses a nixos_config whose .nix files hold an SSH key
// that is not one, such as the placeholder of a copied example: the image
// would boot letting nobody in.
func checkConfigKeys(root string) []error {
	var errs []error
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".nix") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
				continue // a comment, such as an example of the form
			}
			for _, m := range keyLiteral.FindAllStringSubmatch(sc.Text(), -1) {
				if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m[1] + " " + m[2])); err != nil {
					errs = append(errs, fmt.Errorf("nixos_config: %s:%d holds %q, which is not a real SSH public key (a placeholder?): the image would let nobody in with it; replace it with the contents of your ~/.ssh/id_*.pub, or remove it and set use_local_ssh_keys = true", p, n, abbrev(m[0])))
				}
			}
		}
		return nil
	})
	return errs
}

// abbrev shortens a long value for a message.
func abbrev(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// pluginModule is the NixOS module added to a nixos_config build: the
// template's hostname and ssh_authorized_keys, which would otherwise be
// ignored. It is "" when there is nothing to add.
func pluginModule(cfg *Config) string {
	if cfg.NixOSConfig == "" || (!cfg.hostnameSet && len(cfg.SSHAuthorizedKeys) == 0) {
		return ""
	}
	var b strings.Builder
	b.WriteString("# Added by the nixos-sd plugin: the template's hostname and ssh_authorized_keys.\n{ lib, ... }:\n{\n")
	if cfg.hostnameSet {
		fmt.Fprintf(&b, "  networking.hostName = lib.mkForce %s;\n", nixString(cfg.Hostname))
	}
	if len(cfg.SSHAuthorizedKeys) > 0 {
		b.WriteString("  services.openssh.enable = true;\n  users.users.root.openssh.authorizedKeys.keys = [\n")
		for _, k := range cfg.SSHAuthorizedKeys {
			fmt.Fprintf(&b, "    %s\n", nixString(strings.TrimSpace(k)))
		}
		b.WriteString("  ];\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// moduleSummary says what pluginModule sets.
func moduleSummary(cfg *Config) string {
	var parts []string
	if cfg.hostnameSet {
		parts = append(parts, "hostname "+cfg.Hostname)
	}
	if n := len(cfg.SSHAuthorizedKeys); n > 0 {
		parts = append(parts, fmt.Sprintf("%d SSH key(s) for root", n))
	}
	return strings.Join(parts, ", ")
}

// pluginModuleFile is nixos/plugin.nix of a nixos_config build.
func pluginModuleFile(cfg *Config) string {
	if m := pluginModule(cfg); m != "" {
		return m
	}
	return "# The template sets neither hostname nor ssh_authorized_keys.\n{ }\n"
}

// MinNix is the oldest Nix that can evaluate the nixpkgs option's channel
// (nixpkgs' lib/minver.nix), and false when the plugin cannot tell (a
// revision). minver.nix was 2.3.17 from NixOS 25.05 on and is 2.18 from
// 25.11 and in the unstable channels.
func MinNix(nixpkgs string) (string, bool) {
	switch {
	case nixpkgs == "":
		nixpkgs = DefaultNixpkgs
	case strings.Contains(nixpkgs, "unstable"):
		return "2.18", true
	}
	if _, version, ok := releaseOfURL(nixpkgs); ok {
		nixpkgs = "nixos-" + version[:5]
	}
	m := channelRelease.FindStringSubmatch(nixpkgs)
	if m == nil {
		return "", false
	}
	switch rel := m[1]; {
	case rel >= "25.11":
		return "2.18", true
	case rel >= "25.05":
		return "2.3.17", true
	default:
		return "2.3", true
	}
}

// channelRelease is the release of a nixos-YY.MM channel.
var channelRelease = regexp.MustCompile(`^nixos-([0-9]{2}\.[0-9]{2})(-small)?$`)

// VersionLess reports whether the dotted version a is older than b.
func VersionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
