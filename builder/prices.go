package builder

import (
	"strings"
)

// The prices the cost report uses when EC2 cannot tell them: the on-demand
// price of an instance that fell back to on-demand (or whose spot price
// DescribeSpotPriceHistory did not answer), and the gp3 volume price.
//
// Source: Amazon EC2 On-Demand Pricing (https://aws.amazon.com/ec2/pricing/on-demand/),
// Linux, US East (N. Virginia), and Amazon EBS Pricing
// (https://aws.amazon.com/ebs/pricing/), gp3 storage, same region; as listed
// on pricesDate. Other regions differ by up to about a third: the report
// names the table as its source so the figure reads as an estimate.
const (
	pricesDate   = "2026-11-30"
	pricesRegion = "us-east-1"
	// gp3PerGBMonth is the gp3 storage price in US dollars per GB-month.
	gp3PerGBMonth = 0.08
	// hoursPerMonth is the month AWS prorates EBS storage over.
	hoursPerMonth = 730
	// publicIPv4PerHour is what an instance's public IPv4 address costs
	// per hour, since 2024-02-01 (Amazon VPC pricing, "Public IPv4 address";
	// announced on the AWS Networking & Content Delivery blog, "Identify and
	// optimize public IPv4 address usage on AWS"), in every region.
	publicIPv4PerHour = 0.005
)

// onDemandLarge is the hourly on-demand price of each Graviton family's
// .large size; other sizes scale with their vCPU count, as AWS prices them.
var onDemandLarge = map[string]float64{
	"a1":   0.051,
	"c6g":  0.068,
	"c6gd": 0.0768,
	"c6gn": 0.0864,
	"c7g":  0.0725,
	"c7gd": 0.0907,
	"c7gn": 0.1248, // was 0.0999, the c7gd-like price; c7gn.large is $0.1248 (unconfirmed: not re-read from the AWS page on pricesDate)
	"c8g":  0.07976,
	"m6g":  0.077,
	"m6gd": 0.0904,
	"m7g":  0.0816,
	"m7gd": 0.1068,
	"m8g":  0.08976,
	"r6g":  0.1008,
	"r6gd": 0.1152,
	"r7g":  0.1071,
	"r7gd": 0.1361,
	"r8g":  0.11782,
	"t4g":  0.0672,
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
	base, ok1 := onDemandLarge[family]
	f, ok2 := sizeFactor[size]
	if !ok1 || !ok2 {
		return 0, false
	}
	return base * f, true
}
