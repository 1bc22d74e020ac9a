package builder

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// checkSpotPrice refuses a spot_price below the current price of every spot
// pool the build could launch in: EC2 would answer no capacity, minutes and
// a paid fleet request later. With on_demand_fallback the build can still
// launch, so it only says so. A price history EC2 does not answer is no
// reason to stop.
func checkSpotPrice(ctx context.Context, e stepEnv, offered []string) error {
	cfg := e.cfg
	if cfg.SpotPrice == "auto" || len(offered) == 0 {
		return nil
	}
	limit, err := strconv.ParseFloat(cfg.SpotPrice, 64)
	if err != nil {
		return nil // Prepare refused it already
	}
	in := &ec2.DescribeSpotPriceHistoryInput{
		ProductDescriptions: []string{"Linux/UNIX"},
		StartTime:           aws.Time(time.Now()),
	}
	for _, t := range offered {
		in.InstanceTypes = append(in.InstanceTypes, types.InstanceType(t))
	}
	if cfg.AvailabilityZone != "" {
		in.AvailabilityZone = aws.String(cfg.AvailabilityZone)
	}
	var cheapest *types.SpotPrice
	best := 0.0
	p := ec2.NewDescribeSpotPriceHistoryPaginator(e.ec2, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		for i, sp := range out.SpotPriceHistory {
			if cfg.AvailabilityZone != "" && aws.ToString(sp.AvailabilityZone) != cfg.AvailabilityZone {
				continue
			}
			v, err := strconv.ParseFloat(aws.ToString(sp.SpotPrice), 64)
			if err != nil {
				continue
			}
			if cheapest == nil || v < best {
				cheapest, best = &out.SpotPriceHistory[i], v
			}
		}
	}
	if cheapest == nil || best <= limit {
		return nil
	}
	where := fmt.Sprintf("%s in %s at $%s/h", cheapest.InstanceType, aws.ToString(cheapest.AvailabilityZone), aws.ToString(cheapest.SpotPrice))
	if cfg.OnDemandFallback {
		e.ui.Say(fmt.Sprintf("spot_price: %s is below every spot pool's current price (the cheapest: %s); on_demand_fallback will launch an on-demand instance", cfg.SpotPrice, where))
		return nil
	}
	return fmt.Errorf("spot_price: %s is below the current price of every spot pool of instance_types (the cheapest: %s), so no spot instance would launch; raise spot_price to at least %s, set it to \"auto\" (capped at the on-demand price), or add cheaper instance_types", cfg.SpotPrice, where, aws.ToString(cheapest.SpotPrice))
}
