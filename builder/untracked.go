package builder

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/retry"
)

// liveInstanceStates are the states of an instance that still costs money or
// will.
var liveInstanceStates = []string{"pending", "running", "stopping", "stopped"}

// errNoneFound makes the tag search ask again: an instance launched a moment
// ago may not show in a filtered DescribeInstances yet.
var errNoneFound = errors.New("no instance with the build id tag yet")

// findByBuildID lists the live instances carrying the build id that are not
// among the known ones: a request whose answer never arrived (Ctrl-C or a
// dropped connection during CreateFleet) launched them. When lost is set
// (the last CreateFleet answer never came) an empty result is asked again a
// few times, since EC2 is eventually consistent. Fleets are not searched:
// DescribeFleets leaves out fleets of type instant unless their ids are
// named (EC2 API reference), and an instant fleet holds nothing once its
// instances are gone.
func findByBuildID(ctx context.Context, e stepEnv, buildID string, knownIDs []string, lost bool) (ids []string, err error) {
	tries := 1
	if lost {
		tries = 4
	}
	err = retry.Config{
		Tries:       tries,
		RetryDelay:  pollBackoff(e.cfg).Linear,
		ShouldRetry: func(err error) bool { return errors.Is(err, errNoneFound) },
	}.Run(ctx, func(ctx context.Context) error {
		var err error
		if ids, err = instancesByBuildID(ctx, e, buildID); err != nil {
			return err
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(knownIDs, id) })
		if lost && len(ids) == 0 {
			return errNoneFound
		}
		return nil
	})
	if errors.Is(err, errNoneFound) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// instancesByBuildID lists the live instances tagged with the build id.
func instancesByBuildID(ctx context.Context, e stepEnv, buildID string) ([]string, error) {
	var ids []string
	pages := ec2.NewDescribeInstancesPaginator(e.ec2, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + BuildIDTag), Values: []string{buildID}},
		{Name: aws.String("instance-state-name"), Values: liveInstanceStates},
	}})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("DescribeInstances by tag: %w", err)
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				ids = append(ids, aws.ToString(inst.InstanceId))
			}
		}
	}
	return ids, nil
}

func tagValue(tags []types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// describeByTagCommand is the AWS CLI command listing the build's instances.
func describeByTagCommand(region, buildID string) string {
	return fmt.Sprintf("aws ec2 describe-instances --region %s --filters Name=tag:%s,Values=%s --query 'Reservations[].Instances[].[InstanceId,State.Name]'", region, BuildIDTag, buildID)
}
