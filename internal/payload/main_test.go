package payload

import (
	"testing"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testhome"
)

func TestMain(m *testing.M) { testhome.Main(m) }
