package builder

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// resourceName is the Name tag of every resource the build creates.
func resourceName(cfg *Config) string {
	name := cfg.PackerBuildName
	if name == "" {
		name = "nixos-sd"
	}
	return "packer-nixos-sd-" + name
}

// resourceTags are cfg.Tags plus the build id, the expiry and the Name tag
// (unless the user set a Name), plus extra (run_tags for the instance and its
// volume).
func resourceTags(cfg *Config, state multistep.StateBag, extra map[string]string) []types.Tag {
	m := map[string]string{"Name": resourceName(cfg)}
	maps.Copy(m, cfg.Tags)
	maps.Copy(m, extra)
	m[BuildIDTag] = getString(state, stateBuildID)
	m[ExpiresTag] = cmp.Or(getString(state, stateExpires), expiry(cfg, time.Now()))
	tags := make([]types.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

// expiry is when the resources of a build started at start are surely
// unused: the instance has shut itself down by instance_max_lifetime, and
// the build (at most build_timeout, shorter) is over.
func expiry(cfg *Config, start time.Time) string {
	return start.Add(cfg.InstanceMaxLifetimeDuration()).UTC().Format(time.RFC3339)
}

func tagSpec(rt types.ResourceType, tags []types.Tag) types.TagSpecification {
	return types.TagSpecification{ResourceType: rt, Tags: tags}
}
