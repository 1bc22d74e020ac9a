package testbed

import (
	"testing"
)

func TestParseShutdown(t *testing.T) {
	type want struct {
		kind    shutdownKind
		minutes int
		err     bool
	}
	cases := map[string]want{
		"shutdown -P now":                  {shutdownAt, 0, false},
		"shutdown -h now":                  {shutdownAt, 0, false},
		"shutdown -P now nixos-sd:\\ lost": {shutdownAt, 0, false},
		"shutdown +0":                      {shutdownAt, 0, false},
		"poweroff":                         {shutdownAt, 0, false},
		"halt -p":                          {shutdownAt, 0, false},
		"shutdown -P +180 packer-nixos-sd:\\ instance_max_lifetime\\ reached": {shutdownAt, 180, false},
		"shutdown -P \\+90": {shutdownAt, 90, false},
		"shutdown":          {shutdownAt, 1, false},
		"shutdown -P":       {shutdownAt, 1, false},
		"shutdown -c":       {shutdownCancel, 0, false},
		"shutdown --help":   {shutdownNone, 0, false},
		"shutdown -k +5":    {shutdownNone, 0, false},
		"reboot":            {shutdownNone, 0, false},
		"shutdown -P 23:00": {shutdownNone, 0, true},
		"shutdown -P +x":    {shutdownNone, 0, true},
	}
	for call, w := range cases {
		kind, minutes, err := parseShutdown(call)
		if kind != w.kind || minutes != w.minutes || (err != nil) != w.err {
			t.Errorf("parseShutdown(%q) = %v, %d, %v; want %v, %d, error %v", call, kind, minutes, err, w.kind, w.minutes, w.err)
		}
	}
}
