package builder

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// errKind is what an EC2 launch error means for the next request.
type errKind int

const (
	// kindOther: a mistake or an outage; the build fails at once.
	kindOther errKind = iota
	// kindCapacity: no capacity at this price right now; worth a wait, other
	// pools, then on-demand.
	kindCapacity
	// kindQuota: the account's quota is used up; only raising it helps.
	kindQuota
	// kindUnsupported: this pool cannot launch this request; leave it out.
	kindUnsupported
)

var (
	capacityErrorCodes = []string{
		"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
		"SpotMaxPriceTooLow", "UnfulfillableCapacity", "InsufficientFreeAddressesInSubnet",
		"InsufficientReservedInstanceCapacity", "capacity-not-available", "price-too-low",
	}
	quotaErrorCodes = []string{"MaxSpotInstanceCountExceeded", "VcpuLimitExceeded", "InstanceLimitExceeded"}
	// unsupportedPoolCodes fail one pool, never the request: the type is not
	// offered in that zone or does not fit the launch template there.
	unsupportedPoolCodes = []string{
		"Unsupported", "InvalidParameterValue", "InvalidParameterCombination",
		"UnsupportedOperation", "InvalidInstanceType",
	}
)

// classify says what one error means. perPool is true for an entry of
// CreateFleet's Errors naming its pool: only there is "unsupported" a
// property of the pool rather than of the whole request.
func classify(code, message string, perPool bool) errKind {
	m := strings.ToLower(message)
	switch {
	case slices.Contains(quotaErrorCodes, code):
		return kindQuota
	case slices.Contains(capacityErrorCodes, code),
		strings.Contains(m, "insufficient capacity"), strings.Contains(m, "no spot capacity"):
		return kindCapacity
	case perPool && (slices.Contains(unsupportedPoolCodes, code) || strings.Contains(m, "not supported in")):
		return kindUnsupported
	}
	return kindOther
}

// poolError is one failed pool (or, with no pool, the whole request).
type poolError struct {
	pool    *pool
	code    string
	message string
	kind    errKind
}

func (pe poolError) String() string {
	s := fmt.Sprintf("%s: %s", pe.code, pe.message)
	if pe.pool != nil {
		s += fmt.Sprintf(" [%s %s]", pe.pool.instanceType, cmp.Or(pe.pool.zone, pe.pool.subnetID))
	}
	return s
}

// errRefused is a fleet request that launched nothing, with every reason.
type errRefused struct {
	lifecycle types.DefaultTargetCapacityType
	errs      []poolError
	// requestWide: every pool refused the request alike (requestWide).
	requestWide bool
}

func (e *errRefused) Error() string {
	if len(e.errs) == 0 {
		return "EC2 launched no instance and gave no reason"
	}
	var s []string
	for _, pe := range e.errs {
		s = append(s, pe.String())
	}
	return strings.Join(dedupe(s), "; ")
}

// has says whether any reason is of kind k.
func (e *errRefused) has(k errKind) bool {
	return slices.ContainsFunc(e.errs, func(pe poolError) bool { return pe.kind == k })
}

// kind is what the refusal means as a whole: a quota blocks the lifecycle;
// capacity anywhere is worth a retry even when other pools failed oddly
// (one odd pool must not hide the others' capacity); only odd errors fail
// the build. A refusal that only left out unsupported pools is retried at
// once with the pools left.
func (e *errRefused) kind() errKind {
	switch {
	case len(e.errs) == 0:
		return kindCapacity
	case e.has(kindQuota):
		return kindQuota
	case e.has(kindCapacity):
		return kindCapacity
	case e.has(kindOther):
		return kindOther
	}
	return kindUnsupported
}

// unsupportedPools are the pools EC2 said cannot launch this request.
func (e *errRefused) unsupportedPools() []pool {
	var out []pool
	for _, pe := range e.errs {
		if pe.kind == kindUnsupported && pe.pool != nil && !slices.Contains(out, *pe.pool) {
			out = append(out, *pe.pool)
		}
	}
	return out
}

// refusal turns CreateFleet's Errors into an *errRefused, matching each entry
// to its pool.
func refusal(lifecycle types.DefaultTargetCapacityType, errs []types.CreateFleetError, pools []pool) *errRefused {
	r := &errRefused{lifecycle: lifecycle}
	for _, fe := range errs {
		code, msg := aws.ToString(fe.ErrorCode), aws.ToString(fe.ErrorMessage)
		var p *pool
		if lo := fe.LaunchTemplateAndOverrides; lo != nil && lo.Overrides != nil {
			p = matchPool(pools, lo.Overrides)
		}
		r.errs = append(r.errs, poolError{pool: p, code: code, message: msg, kind: classify(code, msg, p != nil)})
	}
	if requestWide(r.errs) {
		// Every pool failed alike, for a reason naming no pool: the request
		// is wrong (a volume smaller than the AMI's snapshot, say), and
		// leaving pools out would only end in "no pool supported".
		r.errs = []poolError{{code: r.errs[0].code, message: r.errs[0].message, kind: kindOther}}
		r.requestWide = true
	}
	return r
}

// requestWide says whether the per-pool errors are one error of the whole
// request: every entry InvalidParameterValue or InvalidParameterCombination
// with the same code and message, naming none of the pools' instance types.
func requestWide(errs []poolError) bool {
	if len(errs) == 0 {
		return false
	}
	first := errs[0]
	if first.code != "InvalidParameterValue" && first.code != "InvalidParameterCombination" {
		return false
	}
	for _, pe := range errs {
		if pe.code != first.code || pe.message != first.message || (pe.pool != nil && strings.Contains(pe.message, pe.pool.instanceType)) {
			return false
		}
	}
	return true
}

// matchPool finds the pool an override names, or nil.
func matchPool(pools []pool, o *types.FleetLaunchTemplateOverrides) *pool {
	subnet, zone := aws.ToString(o.SubnetId), aws.ToString(o.AvailabilityZone)
	for i, p := range pools {
		if p.instanceType != string(o.InstanceType) {
			continue
		}
		if (subnet == "" || subnet == p.subnetID) && (zone == "" || zone == p.zone) {
			return &pools[i]
		}
	}
	return nil
}

// quotaAdvice says which Service Quotas quota to raise for the types, and
// where.
func quotaAdvice(region string, lifecycle types.DefaultTargetCapacityType, instanceTypes []string, vcpus int32) string {
	name, code := quotaFor(lifecycle, instanceTypes)
	want := "the vCPUs of one instance"
	if vcpus > 0 {
		want = fmt.Sprintf("at least %d vCPUs", vcpus)
	}
	s := fmt.Sprintf("raise the EC2 quota %q to %s in Service Quotas (console: Service Quotas > AWS services > Amazon Elastic Compute Cloud (Amazon EC2), region %s", name, want, region)
	if code != "" {
		d := "<vCPUs>"
		if vcpus > 0 {
			d = fmt.Sprint(vcpus)
		}
		s += fmt.Sprintf("; or: aws service-quotas request-service-quota-increase --region %s --service-code ec2 --quota-code %s --desired-value %s", region, code, d)
	}
	s += "); a retry does not help until then"
	return s
}

// quotaFor is the Service Quotas name (and code, when known) covering the
// types' families for the lifecycle.
func quotaFor(lifecycle types.DefaultTargetCapacityType, instanceTypes []string) (name, code string) {
	spot := lifecycle == types.DefaultTargetCapacityTypeSpot
	letter := "c"
	if len(instanceTypes) > 0 {
		letter = instanceTypes[0][:1]
	}
	switch {
	case letter == "g" && spot:
		return "All G and VT Spot Instance Requests", ""
	case letter == "g":
		return "Running On-Demand G and VT instances", ""
	case letter == "x" && spot:
		return "All X Spot Instance Requests", ""
	case letter == "x":
		return "Running On-Demand X instances", ""
	case spot:
		return "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "L-34B43A08"
	}
	return "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A"
}
