package builder

import (
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// resourceName is the Name tag of every resource the build creates.
func resourceName(cfg *Config) string {
	name := cfg.PackerBuildName
	if name == "" {
		name = "nixos-sd"
	}
	return "packer-nixos-sd-" + name
}

// resourceTags are cfg.Tags plus the build id and the Name tag (unless the
// user set a Name), plus extra (run_tags for the instance and its volume).
func resourceTags(cfg *Config, buildID string, extra map[string]string) []types.Tag {
	m := map[string]string{"Name": resourceName(cfg)}
	maps.Copy(m, cfg.Tags)
	maps.Copy(m, extra)
	m[BuildIDTag] = buildID
	tags := make([]types.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

func tagSpec(rt types.ResourceType, tags []types.Tag) types.TagSpecification {
	return types.TagSpecification{ResourceType: rt, Tags: tags}
}
