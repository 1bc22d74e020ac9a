// Command packer-plugin-nixos-sd is a Packer plugin that builds NixOS SD card
// images for AArch64 boards on a native AArch64 EC2 spot instance.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/nixos-sd/packer-plugin-nixos-sd/builder"
	"github.com/nixos-sd/packer-plugin-nixos-sd/datasource"
	"github.com/nixos-sd/packer-plugin-nixos-sd/provisioner"
	"github.com/nixos-sd/packer-plugin-nixos-sd/version"
)

func main() {
	pps := plugin.NewSet()
	pps.RegisterBuilder(plugin.DEFAULT_NAME, new(builder.Builder))
	pps.RegisterProvisioner(plugin.DEFAULT_NAME, new(provisioner.Provisioner))
	pps.RegisterDatasource("debian-ami", new(datasource.Datasource))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
