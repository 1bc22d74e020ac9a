package awscommon

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

func TestNotYetVisibleRetriesOnlyItsCodes(t *testing.T) {
	o := ec2.Options{Retryer: retry.NewStandard()}
	NotYetVisible(time.Second, CodeInstanceNotFound)(&o)
	if !o.Retryer.IsErrorRetryable(&smithy.GenericAPIError{Code: CodeInstanceNotFound}) {
		t.Error("InvalidInstanceID.NotFound is not retried")
	}
	if o.Retryer.IsErrorRetryable(&smithy.GenericAPIError{Code: "UnauthorizedOperation"}) {
		t.Error("UnauthorizedOperation is retried")
	}
	if !o.Retryer.IsErrorRetryable(&smithy.GenericAPIError{Code: "RequestLimitExceeded"}) {
		t.Error("throttling is no longer retried")
	}
	for attempt := 1; attempt < 8; attempt++ {
		d, err := o.Retryer.RetryDelay(attempt, &smithy.GenericAPIError{Code: CodeInstanceNotFound})
		if err != nil || d > time.Second {
			t.Errorf("attempt %d: delay %s (%v), want at most 1s", attempt, d, err)
		}
	}
}
