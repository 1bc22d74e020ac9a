package builder

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

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

// EC2's tag limits (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html):
// 50 tags per resource, keys of 1 to 128 characters, values of at most 256,
// and keys beginning with aws: reserved.
const (
	maxTags        = 50
	maxTagKeyLen   = 128
	maxTagValueLen = 256
)

// checkTags checks tags and run_tags against EC2's limits, counting the tags
// the plugin adds (Name unless set, the build id and the expiry) to the
// instance's, which carries both maps.
func checkTags(tags, runTags map[string]string) []error {
	var errs []error
	for _, opt := range []struct {
		name string
		m    map[string]string
	}{{"tags", tags}, {"run_tags", runTags}} {
		for _, k := range slices.Sorted(maps.Keys(opt.m)) {
			v := opt.m[k]
			switch {
			case strings.TrimSpace(k) == "":
				errs = append(errs, fmt.Errorf("%s: a tag has an empty key; EC2 needs 1 to %d characters, so name it or remove it", opt.name, maxTagKeyLen))
			case utf8.RuneCountInString(k) > maxTagKeyLen:
				errs = append(errs, fmt.Errorf("%s: the key %q has %d characters; EC2 allows at most %d; use a shorter one", opt.name, k, utf8.RuneCountInString(k), maxTagKeyLen))
			case strings.HasPrefix(strings.ToLower(k), "aws:"):
				errs = append(errs, fmt.Errorf("%s: %q uses the reserved aws: prefix; rename the tag", opt.name, k))
			case k == BuildIDTag || k == ExpiresTag:
				errs = append(errs, fmt.Errorf("%s: %q is set by the plugin; remove it", opt.name, k))
			}
			if n := utf8.RuneCountInString(v); n > maxTagValueLen {
				errs = append(errs, fmt.Errorf("%s: the value of %q has %d characters; EC2 allows at most %d; use a shorter one", opt.name, k, n, maxTagValueLen))
			}
		}
	}
	keys := map[string]bool{"Name": true, BuildIDTag: true, ExpiresTag: true}
	for k := range tags {
		keys[k] = true
	}
	for k := range runTags {
		keys[k] = true
	}
	if len(keys) > maxTags {
		errs = append(errs, fmt.Errorf("tags and run_tags: the instance would carry %d tags (yours, plus Name unless you set it, %s and %s that the plugin adds); EC2 allows %d per resource, so remove %d", len(keys), BuildIDTag, ExpiresTag, maxTags, len(keys)-maxTags))
	}
	return errs
}
