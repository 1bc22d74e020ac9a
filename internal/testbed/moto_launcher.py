"""Runs moto's EC2 server (moto 5.2.5) for the test bed, with four small patches.

moto.go starts this file with the venv's python instead of the plain
`moto_server` script because moto alone cannot emulate what the plugin relies
on. Each patch is marked below with what plain moto does and what AWS does.
Usage: python moto_launcher.py -H 127.0.0.1 -p PORT   (same flags as moto_server)
Needs MOTO_AMIS_PATH (the catalogue written by amis.go).
"""

import json
import os
import sys
from datetime import datetime, timezone

from moto.core.parse import default_timestamp_parser as parse_timestamp
from moto.ec2.exceptions import InvalidParameterCombination
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.fleets import Fleet
from moto.ec2.models.instances import Instance
from moto.ec2.responses.amis import AmisResponse
from moto.server import main

# 1. Region scoping and owner alias of catalogue images.
# Plain moto loads every MOTO_AMIS_PATH image into every region, with the same
# id, and forces owner_alias "amazon" on all of them. AWS has a different id per
# region and no alias on images from other accounts (such as Debian's). The
# catalogue gives each image a "regions" list; an image loads only there.


def _load_amis(self):
    with open(os.environ["MOTO_AMIS_PATH"], encoding="utf-8") as f:
        images = json.load(f)
    for ami in images:
        regions = ami.pop("regions", None)
        if regions is not None and self.region_name not in regions:
            continue
        if isinstance(ami.get("creation_date"), str):
            ami["creation_date"] = parse_timestamp(ami["creation_date"])
        ami.setdefault("region_name", self.region_name + "a")
        self.amis[ami["ami_id"]] = Ami(self, **ami)


AmiBackend._load_amis = _load_amis

# 2. AMI deprecation.
# Plain moto has no DeprecationTime on images and ignores IncludeDeprecated.
# AWS shows DeprecationTime, and DescribeImages leaves out images deprecated
# before now unless IncludeDeprecated=true, image ids are given, or the caller
# owns the image.
_ami_init = Ami.__init__


def _ami_init_with_deprecation(self, *args, deprecation_time=None, **kwargs):
    _ami_init(self, *args, **kwargs)
    self.deprecation_time = deprecation_time


Ami.__init__ = _ami_init_with_deprecation


def _is_deprecated(ami, now):
    t = getattr(ami, "deprecation_time", None)
    if not t:
        return False
    when = parse_timestamp(t)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when <= now


_describe_images = AmisResponse.describe_images


def _describe_images_without_deprecated(self):
    result = _describe_images(self)
    include = str(self._get_param("IncludeDeprecated", False)).lower() == "true"
    if include or self._get_param("ImageIds", []):
        return result
    now = datetime.now(timezone.utc)
    images = result.result["Images"]
    result.result["Images"] = [
        i for i in images if i.owner_id == self.current_account or not _is_deprecated(i, now)
    ]
    return result


AmisResponse.describe_images = _describe_images_without_deprecated

# 3. DeleteFleets after the fleet's instances are already terminated.
# Plain moto answers DeleteFleets(TerminateInstances=true) with
# InvalidParameterCombination "No instances specified" when nothing is left to
# terminate; AWS deletes the fleet.
_fleet_terminate = Fleet.terminate_instances


def _fleet_terminate_tolerant(self):
    try:
        _fleet_terminate(self)
    except InvalidParameterCombination:
        pass


Fleet.terminate_instances = _fleet_terminate_tolerant

# 4. Spot requests of terminated instances.
# Plain moto leaves a spot request "active" after its instance is terminated
# (and makes instant fleets' requests "persistent"). AWS closes one-time
# requests, which instant fleets make, with status instance-terminated-by-user.
_instance_terminate = Instance.terminate


def _instance_terminate_closing_spot_requests(self):
    fleet_id = getattr(self, "_fleet_id", None)
    previous = _instance_terminate(self)
    for req in list(self.ec2_backend.spot_instance_requests.values()):
        if getattr(req, "instance", None) is not self or req.state not in ("open", "active"):
            continue
        fleet = self.ec2_backend.get_fleet(req.spot_fleet_id or fleet_id or "")
        if req.type == "one-time" or (fleet is not None and fleet.fleet_type == "instant"):
            req.state = "closed"
            req._status_code = "instance-terminated-by-user"
            req.status_message = "Spot Instance terminated due to user-initiated termination."
    return previous


Instance.terminate = _instance_terminate_closing_spot_requests

if __name__ == "__main__":
    main(sys.argv[1:])
