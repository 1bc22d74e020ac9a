package awscommon

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// NotYetVisible is a per-call option: the SDK's retryer also retries the
// given *.NotFound codes, waiting at most maxDelay between tries. EC2 is
// eventually consistent: a resource created a moment ago can answer NotFound
// for seconds, which means "not visible yet", never "gone".
func NotYetVisible(maxDelay time.Duration, codes ...string) func(*ec2.Options) {
	return func(o *ec2.Options) {
		if o.Retryer == nil {
			o.Retryer = retry.NewStandard()
		}
		o.Retryer = retry.AddWithMaxBackoffDelay(retry.AddWithErrorCodes(o.Retryer, codes...), maxDelay)
	}
}

// EC2 codes of a resource that does not exist (or is not visible yet).
const (
	CodeInstanceNotFound       = "InvalidInstanceID.NotFound"
	CodeGroupNotFound          = "InvalidGroup.NotFound"
	CodeLaunchTemplateNotFound = "InvalidLaunchTemplateId.NotFound"
)
