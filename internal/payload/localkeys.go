package payload

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// localSSHKeys are this user's public keys: every ~/.ssh/*.pub, then the keys
// the SSH agent (SSH_AUTH_SOCK) holds that are not among them, as
// authorized_keys lines, with where each came from.
func localSSHKeys() (keys, sources []string) {
	seen := map[string]bool{}
	add := func(pk ssh.PublicKey, comment, source string) {
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
		if seen[line] {
			return
		}
		seen[line] = true
		if comment != "" {
			line += " " + comment
		}
		keys = append(keys, line)
		sources = append(sources, source)
	}
	if home, err := os.UserHomeDir(); err == nil {
		files, _ := filepath.Glob(filepath.Join(home, ".ssh", "*.pub"))
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			pk, comment, _, _, err := ssh.ParseAuthorizedKey(b)
			if err != nil {
				continue
			}
			add(pk, comment, f)
		}
	}
	for _, k := range agentKeys() {
		add(k, k.Comment, "the SSH agent ("+k.Type()+" "+k.Comment+")")
	}
	return keys, sources
}

// agentKeys lists the SSH agent's keys, none when there is no agent.
func agentKeys() []*agent.Key {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil
	}
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		return nil
	}
	return keys
}
