package payload

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// imageInfo is what the probe of the built image found.
type imageInfo struct {
	// size is the image file's size in bytes.
	size int64
	// zstd is true when the host has zstd to compress ranges in transit.
	zstd bool
	// maxSessions is sshd's MaxSessions, 0 when it could not be read.
	maxSessions int
}

// locate finds the one image in the build result and probes it.
func (r *run) locate(ctx context.Context) (string, imageInfo, error) {
	defer r.timer.track(PhaseLocate)()
	out, err := remotecmd.Output(ctx, r.comm, locateCommand(r.cfg))
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("the build result has no sd-image directory (%v); make sure the configuration imports nixpkgs' sd-image module (sd-image-aarch64.nix)", err)
	}
	var images []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			images = append(images, l)
		}
	}
	sort.Strings(images)
	switch len(images) {
	case 0:
		return "", imageInfo{}, fmt.Errorf("the build result's sd-image directory holds no .img or .img.zst file; check the configuration's sdImage settings")
	case 1:
	default:
		return "", imageInfo{}, fmt.Errorf("the build result's sd-image directory holds %d images (%s); change the configuration so it builds exactly one", len(images), strings.Join(images, ", "))
	}
	image := images[0]
	out, err = remotecmd.Output(ctx, r.comm, probeCommand(image))
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("reading the size of %s: %w", image, err)
	}
	info, err := parseProbe(out)
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("reading the size of %s: %w", image, err)
	}
	r.ui.Say(fmt.Sprintf("Built %s (%s)", image, humanBytes(info.size)))
	return image, info, nil
}

func parseProbe(out string) (imageInfo, error) {
	info := imageInfo{size: -1}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch k {
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return info, fmt.Errorf("unexpected size %q", v)
			}
			info.size = n
		case "zstd":
			info.zstd = v == "yes"
		case "maxsessions":
			if n, err := strconv.Atoi(v); err == nil {
				info.maxSessions = n
			}
		}
	}
	if info.size < 0 {
		return info, fmt.Errorf("stat printed no size: %q", out)
	}
	return info, nil
}
