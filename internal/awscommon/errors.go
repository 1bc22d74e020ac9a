package awscommon

import (
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// credentialErrorCodes are the EC2/STS codes that mean the credentials are
// wrong, expired, or not allowed in the region.
var credentialErrorCodes = []string{
	"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
	"RequestExpired", "OptInRequired", "Blocked", "UnrecognizedClientException",
	"InvalidAccessKeyId",
}

// permissionErrorCodes are the codes that mean valid credentials lack a
// permission.
var permissionErrorCodes = []string{"UnauthorizedOperation", "AccessDenied"}

// ErrorCode is the AWS error code of err ("" when err is not an API error).
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// IsCredentialError reports whether code means the credentials are wrong.
func IsCredentialError(code string) bool { return slices.Contains(credentialErrorCodes, code) }

// IsPermissionError reports whether code means the credentials lack a
// permission.
func IsPermissionError(code string) bool { return slices.Contains(permissionErrorCodes, code) }

// RetriesAdvice says what to do about an error the SDK's retryer gave up on:
// throttling, or EC2 failing on its side (5xx). It is "" for other errors.
func RetriesAdvice(err error, maxRetries int) string {
	if err == nil {
		return ""
	}
	code := ErrorCode(err)
	if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
		return fmt.Sprintf("EC2 throttled the requests (%s) through all %d tries; try again in a few minutes, or raise max_retries", code, maxRetries)
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return fmt.Sprintf("EC2 failed on its side (HTTP %d %s) through all %d tries; try again in a few minutes (see https://health.aws.amazon.com for outages), or raise max_retries", re.HTTPStatusCode(), code, maxRetries)
	}
	return ""
}
