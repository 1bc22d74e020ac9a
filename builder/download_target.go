package builder

import (
	"net"
	"strconv"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// downloadTarget lets the image download open more SSH connections to the
// instance, with what stepConnect connects with: the same address, port,
// user, key and host key check. It is nil (one connection) behind a bastion
// or proxy, which the download does not go through.
func downloadTarget(cfg *Config, state multistep.StateBag) *payload.SSHTarget {
	if cfg.Comm.SSHBastionHost != "" || cfg.Comm.SSHProxyHost != "" {
		return nil
	}
	s := connectStep(cfg)
	host, err := s.Host(state)
	if err != nil {
		return nil
	}
	sc, err := s.SSHConfig(state)
	if err != nil {
		return nil
	}
	return &payload.SSHTarget{Address: net.JoinHostPort(host, strconv.Itoa(cfg.Comm.Port())), Config: sc}
}
