package testbed

// The cloud-init stand-in: what cloud-init does with an instance's user data
// on its first boot, for the cloud-config fields the plugin writes.
//
// It follows cloud-init's own code (cloudinit/user_data.py, handlers,
// config/cc_ssh.py, cc_runcmd.py, util.shellify):
//   - User data may be gzip-compressed. Text whose first line starts with
//     "#cloud-config" is cloud-config; empty user data is nothing; text with
//     no known header is ignored ("Unhandled non-multipart userdata"). Shell
//     scripts, MIME multipart and the other part types are not played here:
//     such user data makes the host fail to start rather than boot as if it
//     had none.
//   - The body is YAML. YAML that does not load, or whose top level is not a
//     mapping, is ignored whole (util.load_yaml returns {}), so the instance
//     boots with no keys from it.
//   - cc_ssh, before sshd starts: ssh_deletekeys (default true) removes every
//     ssh_host_*key* file; ssh_keys writes <type>_private, <type>_public and
//     <type>_certificate for rsa, ecdsa and ed25519 (other names are
//     skipped), deriving a missing public half with ssh-keygen -y; without
//     ssh_keys, ssh_genkeytypes (default rsa, ecdsa, ed25519) are generated
//     where no key of that type exists. ssh_authorized_keys go to the
//     default user's authorized_keys, after the instance's key pair.
//   - cc_runcmd: each item is a string run by sh or a list quoted into one
//     command line, all in one script that runs as root in the final stage,
//     after sshd is up.
//
// Keys of the top-level mapping that cloud-init would act on but the
// stand-in does not play make the host fail to start; keys no module reads
// are ignored, as cloud-init's schema check only warns about them.

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"
)

// hostKeyTypes are the host key types cloud-init's cc_ssh handles.
var hostKeyTypes = []string{"rsa", "ecdsa", "ed25519"}

// cloudConfig is what the stand-in applies.
type cloudConfig struct {
	// AuthorizedKeys are ssh_authorized_keys.
	AuthorizedKeys []string
	// DeleteKeys is ssh_deletekeys.
	DeleteKeys bool
	// HostKeys are ssh_keys' recognised entries: file name (as in /etc/ssh)
	// to content.
	HostKeys map[string]string
	// HasHostKeys: ssh_keys was given (even with no recognised entry).
	HasHostKeys bool
	// GenKeyTypes is ssh_genkeytypes.
	GenKeyTypes []string
	// RunCmd is runcmd as a shell script; empty without runcmd.
	RunCmd string
	// Warnings are what cloud-init would log.
	Warnings []string
}

// cloudInitIgnored are top-level keys the plugin may write that change
// nothing on the test bed's hosts.
var cloudInitIgnored = map[string]bool{
	"ssh_quiet_keygen": true, "ssh_publish_hostkeys": true, "disable_root": true, "disable_root_opts": true,
}

// parseUserData reads user data as cloud-init does. An error is user data the
// stand-in cannot play; a nil config with no error is user data cloud-init
// ignores.
func parseUserData(raw []byte) (*cloudConfig, error) {
	if len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("gzip user data: %w", err)
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, 16<<20)); err != nil {
			return nil, fmt.Errorf("gzip user data: %w", err)
		}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	first, _, _ := bytes.Cut(raw, []byte("\n"))
	switch {
	case bytes.HasPrefix(first, []byte("#cloud-config")):
	case bytes.HasPrefix(first, []byte("#!")), bytes.HasPrefix(first, []byte("#include")), bytes.HasPrefix(first, []byte("#cloud-boothook")),
		bytes.HasPrefix(first, []byte("#part-handler")), bytes.HasPrefix(first, []byte("#upstart-job")), bytes.HasPrefix(first, []byte("## template:")),
		bytes.HasPrefix(bytes.ToLower(first), []byte("content-type:")), bytes.HasPrefix(bytes.ToLower(first), []byte("mime-version:")):
		return nil, fmt.Errorf("user data of the kind %q: the cloud-init stand-in plays #cloud-config only", strings.TrimSpace(string(first)))
	default:
		return &cloudConfig{DeleteKeys: true, GenKeyTypes: hostKeyTypes,
			Warnings: []string{"Unhandled non-multipart (text/x-not-multipart) userdata: ignored"}}, nil
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return &cloudConfig{DeleteKeys: true, GenKeyTypes: hostKeyTypes,
			Warnings: []string{fmt.Sprintf("Failed loading yaml blob: %v; the cloud-config is ignored", err)}}, nil
	}
	cc := &cloudConfig{DeleteKeys: true, GenKeyTypes: hostKeyTypes}
	var unsupported []string
	for k, v := range doc {
		switch k {
		case "ssh_authorized_keys":
			keys, ok := stringList(v)
			if !ok {
				cc.Warnings = append(cc.Warnings, fmt.Sprintf("ssh_authorized_keys: %v is not a list of strings; no key installed from it", v))
				continue
			}
			cc.AuthorizedKeys = keys
		case "ssh_deletekeys":
			b, ok := v.(bool)
			if !ok {
				return nil, fmt.Errorf("ssh_deletekeys: %v is not a boolean", v)
			}
			cc.DeleteKeys = b
		case "ssh_genkeytypes":
			types, ok := stringList(v)
			if !ok {
				return nil, fmt.Errorf("ssh_genkeytypes: %v is not a list of strings", v)
			}
			cc.GenKeyTypes = types
		case "ssh_keys":
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("ssh_keys: %v is not a mapping", v)
			}
			cc.HasHostKeys = true
			cc.HostKeys = map[string]string{}
			for name, val := range m {
				typ, part, ok := strings.Cut(name, "_")
				if !ok || !slices.Contains(hostKeyTypes, typ) || !slices.Contains([]string{"private", "public", "certificate"}, part) {
					cc.Warnings = append(cc.Warnings, fmt.Sprintf("ssh_keys: %s skipped (unrecognised)", name))
					continue
				}
				s, ok := val.(string)
				if !ok {
					return nil, fmt.Errorf("ssh_keys: %s is not a string", name)
				}
				file := "ssh_host_" + typ + "_key"
				switch part {
				case "public":
					file += ".pub"
				case "certificate":
					file += "-cert.pub"
				}
				cc.HostKeys[file] = s
			}
		case "runcmd":
			script, err := shellify(v)
			if err != nil {
				cc.Warnings = append(cc.Warnings, fmt.Sprintf("runcmd: %v; the module failed and runs nothing", err))
				continue
			}
			cc.RunCmd = script
		default:
			if !cloudInitIgnored[k] {
				unsupported = append(unsupported, k)
			}
		}
	}
	if len(unsupported) > 0 {
		slices.Sort(unsupported)
		return nil, fmt.Errorf("cloud-config keys the cloud-init stand-in does not play: %s", strings.Join(unsupported, ", "))
	}
	return cc, nil
}

func stringList(v any) ([]string, bool) {
	items, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// shellify is cloud-init's util.shellify: a #!/bin/sh script with one line
// per item, a string as it is, a list with each element single-quoted.
func shellify(v any) (string, error) {
	items, ok := v.([]any)
	if !ok {
		return "", fmt.Errorf("unable to shellify type %T (want a list)", v)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, it := range items {
		switch x := it.(type) {
		case string:
			b.WriteString(x)
		case []any:
			for i, a := range x {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(shellifyQuote(yamlString(a)))
			}
		default:
			return "", fmt.Errorf("unable to shellify type %T in %v", it, v)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// yamlString is Python's str() of a YAML scalar.
func yamlString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case nil:
		return "None"
	default:
		return fmt.Sprint(x)
	}
}

// applySSH is cc_ssh's host key part on the host's key folder (the host's
// /etc/ssh for sshd's HostKey lines), before sshd starts.
func (cc *cloudConfig) applySSH(ctx context.Context, sshDir string) error {
	if cc.DeleteKeys {
		old, err := filepath.Glob(filepath.Join(sshDir, "ssh_host_*key*"))
		if err != nil {
			return err
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("ssh_deletekeys: %w", err)
			}
		}
	}
	if cc.HasHostKeys {
		for name, content := range cc.HostKeys {
			if err := os.WriteFile(filepath.Join(sshDir, name), []byte(content), 0o600); err != nil {
				return fmt.Errorf("ssh_keys: %w", err)
			}
		}
		for _, typ := range hostKeyTypes {
			priv := "ssh_host_" + typ + "_key"
			_, hasPriv := cc.HostKeys[priv]
			_, hasPub := cc.HostKeys[priv+".pub"]
			if !hasPriv || hasPub {
				continue
			}
			out, err := exec.CommandContext(ctx, "ssh-keygen", "-yf", filepath.Join(sshDir, priv)).Output()
			if err != nil {
				// cloud-init logs the failure and goes on; sshd then
				// refuses the key or starts without it.
				cc.Warnings = append(cc.Warnings, fmt.Sprintf("ssh_keys: deriving %s.pub: %v", priv, err))
				continue
			}
			pub := strings.TrimSpace(string(out)) + " root@localhost\n"
			if err := os.WriteFile(filepath.Join(sshDir, priv+".pub"), []byte(pub), 0o600); err != nil {
				return err
			}
		}
		return nil
	}
	for _, typ := range cc.GenKeyTypes {
		f := filepath.Join(sshDir, "ssh_host_"+typ+"_key")
		if _, err := os.Stat(f); err == nil {
			continue
		}
		if err := run(ctx, "ssh-keygen", "-q", "-t", typ, "-N", "", "-f", f); err != nil {
			cc.Warnings = append(cc.Warnings, fmt.Sprintf("ssh_genkeytypes: %s: %v", typ, err))
		}
	}
	return nil
}

// cloudInitPath is the PATH cloud-init's scripts run with.
const cloudInitPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runFinal is cloud-init's final stage: the runcmd script, as root, inside
// the host (its network and mount namespaces and root, entered through its
// sshd), with its output in state/cloud-init-output.log. It returns at
// once; the script's processes end with the host.
func (h *Host) runFinal(cc *cloudConfig) error {
	if cc.RunCmd == "" {
		return nil
	}
	script := filepath.Join(h.Dir, "state", "cloud-init-runcmd")
	if err := os.WriteFile(script, []byte(cc.RunCmd), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(h.Dir, "state", "cloud-init-output.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(h.cmd.Process.Pid), "-n", "-m", "-r", "-w",
		"/bin/sh", standinState+"/cloud-init-runcmd")
	cmd.Env = []string{"PATH=" + cloudInitPath, "LANG=C.UTF-8", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return fmt.Errorf("running runcmd: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
	}()
	return nil
}

// shellifyQuote quotes one runcmd argument as cloud-init's shellify does:
// every argument in single quotes, even a safe one.
func shellifyQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
