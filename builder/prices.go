package builder

import (
	"strings"
)

// The prices the cost report uses when EC2 cannot tell them: the on-demand
// price of an instance that fell back to on-demand (or whose spot price
// DescribeSpotPriceHistory did not answer), and the gp3 volume price.
//
// All are Linux, US East (N. Virginia). Other regions differ by up to
// about a third: the report names the table as its source so the figure
// reads as an estimate. AWS's own pages (https://aws.amazon.com/ec2/pricing/on-demand/,
// https://aws.amazon.com/ebs/pricing/) render their prices by script; each
// row below names the page its figure was read from and when.
const (
	// pricesDate is when the table was last reviewed as a whole.
	pricesDate   = "2026-12-03"
	pricesRegion = "us-east-1"
	// gp3PerGBMonth is the gp3 storage price in US dollars per GB-month
	// (Amazon EBS Pricing, gp3 storage; no page that could be read
	// confirmed it at the last review).
	gp3PerGBMonth = 0.08
	// hoursPerMonth is the month AWS prorates EBS storage over.
	hoursPerMonth = 730
	// publicIPv4PerHour is what an instance's public IPv4 address costs
	// per hour, since 2024-02-01, in every region (Amazon VPC pricing,
	// "Public IPv4 address"; read on
	// https://community.aws/content/2c6cKl0W4KQZIO6dWnnDHs1tHSp/aws-to-charge-public-ipv4-addresses
	// and https://www.repost.aws/articles/ARapCqBMkaTfCidGWemmSjAA/public-ipv4-addresses-cost-projection
	// on 2026-12-03).
	publicIPv4PerHour = 0.005
)

// odPrice is one family's on-demand price and where it was read.
type odPrice struct {
	large  float64 // US dollars per hour of the .large size
	source string  // the page the figure was read from
	read   string  // the date it was read there, YYYY-MM-DD
}

// The page the table was read from: Karpenter's fallback price table, which
// hack/code/prices_gen writes from the AWS Price List API (Linux, shared
// tenancy, us-east-1). Every row is its .large figure; the other sizes it
// lists are that times sizeFactor to within 0.2%.
const (
	srcKarpenter = "https://github.com/aws/karpenter-provider-aws/blob/265ee0ba5b8e337dec6b82dde965b03021ccb418/pkg/providers/pricing/zz_generated.pricing_aws.go (generated 2026-02-09T13:43:35Z for us-east-1 from the AWS Price List API)"
	readToday    = "2026-12-03"
)

// onDemandLarge is the hourly on-demand price of each Graviton family's
// .large size; other sizes scale with their vCPU count, as AWS prices them.
var onDemandLarge = map[string]odPrice{
	"a1":   {0.051, srcKarpenter, readToday},
	"c6g":  {0.068, srcKarpenter, readToday},
	"c6gd": {0.0768, srcKarpenter, readToday},
	"c6gn": {0.0864, srcKarpenter, readToday},
	"c7g":  {0.0725, srcKarpenter, readToday},
	"c7gd": {0.0907, srcKarpenter, readToday},
	"c7gn": {0.1248, srcKarpenter, readToday},
	"c8g":  {0.07976, srcKarpenter, readToday},
	"m6g":  {0.077, srcKarpenter, readToday},
	"m6gd": {0.0904, srcKarpenter, readToday},
	"m7g":  {0.0816, srcKarpenter, readToday},
	"m7gd": {0.1068, srcKarpenter, readToday},
	"m8g":  {0.08976, srcKarpenter, readToday},
	"r6g":  {0.1008, srcKarpenter, readToday},
	"r6gd": {0.1152, srcKarpenter, readToday},
	"r7g":  {0.1071, srcKarpenter, readToday},
	"r7gd": {0.1361, srcKarpenter, readToday},
	"r8g":  {0.11782, srcKarpenter, readToday},
	"t4g":  {0.0672, srcKarpenter, readToday},
}

// sizeFactor is each size's multiple of .large.
var sizeFactor = map[string]float64{
	"medium": 0.5, "large": 1, "xlarge": 2, "2xlarge": 4, "4xlarge": 8, "8xlarge": 16,
	"12xlarge": 24, "16xlarge": 32, "24xlarge": 48, "48xlarge": 96,
}

// onDemandPrice is the table's hourly on-demand price of an instance type,
// false when the table does not know it.
func onDemandPrice(instanceType string) (float64, bool) {
	family, size, ok := strings.Cut(instanceType, ".")
	if !ok {
		return 0, false
	}
	row, ok1 := onDemandLarge[family]
	f, ok2 := sizeFactor[size]
	if !ok1 || !ok2 {
		return 0, false
	}
	return row.large * f, true
}
