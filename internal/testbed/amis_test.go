package testbed

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

func TestCatalogueShape(t *testing.T) {
	cat := Catalogue()
	idRE := regexp.MustCompile(`^ami-[0-9a-f]{17}$`)
	ids := map[string]bool{}
	type key struct{ region, name string }
	names := map[key]bool{}
	debian12arm := map[string]int{}
	var tie, impostor, deprecated, futureDeprecation bool
	created := map[string]map[time.Time]int{}
	for _, c := range cat {
		if !idRE.MatchString(c.ID) {
			t.Errorf("bad id %q", c.ID)
		}
		if ids[c.ID] {
			t.Errorf("duplicate id %s", c.ID)
		}
		ids[c.ID] = true
		if names[key{c.Region, c.Name}] {
			t.Errorf("duplicate name %s in %s", c.Name, c.Region)
		}
		names[key{c.Region, c.Name}] = true
		if c.Owner == DebianOwner && c.Release == 12 && c.Architecture == "arm64" {
			debian12arm[c.Region]++
		}
		if c.Owner == ImpostorOwner && c.Release == 13 && c.Architecture == "arm64" {
			impostor = true
		}
		if c.Owner == DebianOwner {
			k := c.Region + c.Architecture
			if created[k] == nil {
				created[k] = map[time.Time]int{}
			}
			created[k][c.CreationDate]++
			if created[k][c.CreationDate] == 2 {
				tie = true
			}
		}
		if c.DeprecationTime != nil {
			if c.Deprecated() {
				deprecated = true
			} else {
				futureDeprecation = true
			}
		}
	}
	if len(debian12arm) != 3 {
		t.Errorf("debian-12-arm64 in %d regions, want 3", len(debian12arm))
	}
	if !tie || !impostor || !deprecated || !futureDeprecation {
		t.Errorf("catalogue lacks: tie=%v impostor=%v deprecated=%v future deprecation=%v", tie, impostor, deprecated, futureDeprecation)
	}
}

func TestWriteCatalogue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "amis.json")
	if err := writeCatalogue(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var amis []map[string]any
	if err := json.Unmarshal(data, &amis); err != nil {
		t.Fatal(err)
	}
	if len(amis) != len(Catalogue()) {
		t.Fatalf("%d entries, want %d", len(amis), len(Catalogue()))
	}
	// Keys moto's Ami constructor accepts, plus the two moto_launcher.py takes.
	allowed := map[string]bool{"ami_id": true, "name": true, "description": true, "owner_id": true, "owner_alias": true,
		"public": true, "virtualization_type": true, "architecture": true, "state": true, "image_type": true,
		"hypervisor": true, "root_device_name": true, "root_device_type": true, "sriov": true, "creation_date": true,
		"boot_mode": true, "tags": true, "regions": true, "deprecation_time": true}
	for _, a := range amis {
		for k := range a {
			if !allowed[k] {
				t.Errorf("entry %v has key %q moto would reject", a["name"], k)
			}
		}
		if regions, _ := a["regions"].([]any); len(regions) != 1 {
			t.Errorf("entry %v: regions %v, want one", a["name"], a["regions"])
		}
	}
}
