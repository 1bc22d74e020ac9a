package provisioner

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// downloadTarget lets the image download open more SSH connections to the
// host, with what Packer connected with: the build's generated data carries
// the communicator's host, port, user and credentials
// (commonsteps.PopulateProvisionHookData). Packer's own SSH communicator
// checks no host key; the extra connections must present the one their first
// saw. It is nil (one connection) for another communicator or without
// credentials; behind a bastion, which generated data does not describe, the
// extra connections fail to open and the download stays on Packer's.
func downloadTarget(data map[string]interface{}) *payload.SSHTarget {
	if t, _ := data["ConnType"].(string); t != "ssh" {
		return nil
	}
	host, _ := data["Host"].(string)
	user, _ := data["User"].(string)
	port := intValue(data["Port"])
	if host == "" || user == "" || port <= 0 {
		return nil
	}
	var auth []ssh.AuthMethod
	key, _ := data["SSHPrivateKey"].(string)
	if key == "" {
		if f, _ := data["SSHPrivateKeyFile"].(string); f != "" {
			if b, err := os.ReadFile(f); err == nil {
				key = string(b)
			}
		}
	}
	if key != "" {
		if signer, err := ssh.ParsePrivateKey([]byte(key)); err == nil {
			auth = append(auth, ssh.PublicKeys(signer))
		}
	}
	if useAgent, _ := data["SSHAgentAuth"].(bool); useAgent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			auth = append(auth, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
				c, err := net.Dial("unix", sock)
				if err != nil {
					return nil, fmt.Errorf("the SSH agent at SSH_AUTH_SOCK: %w; start the agent or unset SSH_AUTH_SOCK", err)
				}
				return agent.NewClient(c).Signers()
			}))
		}
	}
	if pw, _ := data["Password"].(string); pw != "" {
		auth = append(auth, ssh.Password(pw))
	}
	if len(auth) == 0 {
		return nil
	}
	return &payload.SSHTarget{
		Address: net.JoinHostPort(host, strconv.Itoa(port)),
		Config: &ssh.ClientConfig{
			User: user,
			Auth: auth,
			// As Packer's SSH communicator (communicator.Config.SSHConfigFunc).
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		},
	}
}

// intValue reads a number that crossed Packer's RPC as any numeric type.
func intValue(v interface{}) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case uint64:
		return int(n)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}
