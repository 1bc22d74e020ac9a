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
	// (Amazon EBS Pricing, gp3 storage).
	gp3PerGBMonth = 0.08
	// hoursPerMonth is the month AWS prorates EBS storage over.
	hoursPerMonth = 730
	// publicIPv4PerHour is what an instance's public IPv4 address costs
	// per hour, since 2024-02-01 (Amazon VPC pricing, "Public IPv4 address";
	// announced on the AWS Networking & Content Delivery blog, "Identify and
	// optimize public IPv4 address usage on AWS"), in every region.
	publicIPv4PerHour = 0.005
)

// odPrice is one family's on-demand price and where it was read.
type odPrice struct {
	large  float64 // US dollars per hour of the .large size
	source string  // the page the figure was read from
	read   string  // the date it was read there, YYYY-MM-DD
}

// The pages the table was read from: third-party pages quoting AWS's price
// list, as AWS's own page could not be read; rows no page confirmed say so.
const (
	srcVantage  = "https://huggingface.co/spaces/arcee-ai/Benchmarks/commit/75372ac4c9f447f8fec7f064ec40c7285d3bec20 (results.py, prices quoted from instances.vantage.sh: c7g.16xlarge $2.32, c8g.8xlarge $1.276, c8g.16xlarge $2.552, r8g.4xlarge $0.9426; size multiples of .large)"
	srcFactual  = "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/ (published 2026-06-17: m7g.large $0.0816 in us-east-1)"
	srcCackler  = "https://github.com/mbainter/minecraft-cackler/blob/HEAD/terraform/minecraft/InstanceCosts.md (t4g.large $0.0672, c6gd.large $0.0768, m6g.large $0.0770, m6gd.large $0.0904, r6gd.large $0.1152)"
	srcGistA1   = "https://gist.github.com/loretoparisi/905c454228e8ac84b97b77c527018e31 (a1.large $37.23 a month = $0.051 x 730 hours)"
	srcGitHubOD = "public GitHub cost tables found by exact-string code search, repositories not recorded: c6g.large 0.068 and r6g.large 0.1008 in several agreeing tables, r7g.large 0.1071 in one"
	srcCarried  = "none found: no page searched lists this family; kept from the table's revision of 2026-11-30, which did not record its page; re-read it on AWS's on-demand page"
	srcC7gn     = "none confirmed: kept from the revision of 2026-11-30, which marked it as not read from AWS's page; the one public table found (c7gn.large 0.087) also prices c6i.large at c6a's 0.0765 and r6i.large at r6g's 0.1008, so it was not taken; re-read it on AWS's on-demand page"
	readToday   = "2026-12-03"
	readCarried = "2026-11-30"
)

// onDemandLarge is the hourly on-demand price of each Graviton family's
// .large size; other sizes scale with their vCPU count, as AWS prices them.
var onDemandLarge = map[string]odPrice{
	"a1":   {0.051, srcGistA1, readToday},
	"c6g":  {0.068, srcGitHubOD, readToday},
	"c6gd": {0.0768, srcCackler, readToday},
	"c6gn": {0.0864, srcCarried, readCarried},
	"c7g":  {0.0725, srcVantage, readToday},
	"c7gd": {0.0907, srcCarried, readCarried},
	"c7gn": {0.1248, srcC7gn, readCarried},
	"c8g":  {0.07976, srcVantage, readToday},
	"m6g":  {0.077, srcCackler, readToday},
	"m6gd": {0.0904, srcCackler, readToday},
	"m7g":  {0.0816, srcFactual, readToday},
	"m7gd": {0.1068, srcCarried, readCarried},
	"m8g":  {0.08976, srcCarried, readCarried},
	"r6g":  {0.1008, srcGitHubOD, readToday},
	"r6gd": {0.1152, srcCackler, readToday},
	"r7g":  {0.1071, srcGitHubOD, readToday},
	"r7gd": {0.1361, srcCarried, readCarried},
	"r8g":  {0.11782, srcVantage, readToday},
	"t4g":  {0.0672, srcCackler, readToday},
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
