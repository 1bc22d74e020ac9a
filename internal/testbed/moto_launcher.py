"""Runs moto's EC2 server (moto 5.2.5) for the test bed, with patches.

moto.go starts this file with the venv's python instead of the plain
`moto_server` script because moto alone cannot emulate what the plugin relies
on. Each patch is marked below with what plain moto does and what AWS does.
Usage: python moto_launcher.py -H 127.0.0.1 -p PORT   (same flags as moto_server)
Needs MOTO_AMIS_PATH (the catalogue written by amis.go).
"""

import hashlib
import ipaddress
import json
import math
import os
import random
import struct
import sys
import threading
from datetime import datetime, timedelta, timezone

from moto.core.parse import default_timestamp_parser as parse_timestamp
from moto.core.responses import ActionResult
from moto.ec2 import utils as ec2_utils
from moto.ec2.exceptions import InvalidParameterCombination, InvalidParameterValueError
from moto.ec2.models import elastic_network_interfaces
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.fleets import Fleet
from moto.ec2.models.instances import Instance, InstanceBackend, InstanceState, StateReason
from moto.ec2.models.launch_templates import LaunchTemplate
from moto.ec2.models.spot_requests import SpotInstanceRequest
from moto.ec2.models.subnets import Subnet
from moto.ec2.responses import EC2Response
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.fleets import Fleets as FleetsResponse
from moto.ec2.responses.spot_instances import SpotInstances as SpotInstancesResponse
from moto.kms.models import kms_backends
from moto.server import main

# 1. Region scoping and owner alias of catalogue images.
# Plain moto loads every MOTO_AMIS_PATH image into every region, with the same
# id, and forces owner_alias "amazon" on all of them. AWS has a different id per
# region and no alias on images from other accounts (such as Debian's). The
# catalogue gives each image a "regions" list; an image loads only there.
# Plain moto also gives every image a 15 GiB root snapshot; Debian's AMIs have
# 8 GiB ones ("root_volume_size" in the catalogue, 8 when absent).


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
        size = int(ami.pop("root_volume_size", 8))
        image = Ami(self, **ami)
        image.root_volume_size = size
        self.amis[ami["ami_id"]] = image


def _ami_block_device_mappings(self):
    return [
        {
            "DeviceName": self.root_device_name,
            "Ebs": {
                "SnapshotId": self.ebs_snapshot.id,
                "VolumeSize": getattr(self, "root_volume_size", 15),
                "DeleteOnTermination": True,
                "VolumeType": "gp2",
            },
        }
    ]


Ami.block_device_mappings = property(_ami_block_device_mappings)


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

# 5. Launch templates and fleet overrides.
# Plain moto launches a fleet's instances with only the template's ImageId,
# KeyName and UserData and the override's InstanceType and SubnetId: the
# default security group, no network interface of the template, an 8 GiB gp2
# unencrypted /dev/sda1, default metadata options, shutdown behaviour "stop",
# and no public address even in a subnet that maps one. RunInstances with a
# LaunchTemplate takes the groups, key, user data and volumes, but not the
# network interfaces, metadata options or shutdown behaviour, and adds the
# volumes beside a default 8 GiB /dev/sda1.
# AWS launches with every field of the template version, the override's
# InstanceType, SubnetId, AvailabilityZone and ImageId replacing the
# template's (EC2 API reference, FleetLaunchTemplateOverridesRequest;
# "Launch an instance from a launch template": parameters given to
# RunInstances override the template's). Instance-level security groups next
# to network interfaces are refused ("Network interfaces and an
# instance-level security groups may not be specified on the same request").
# The root volume is the AMI's block device mapping with the template's entry
# for the same device replacing size, type and encryption; a size below the
# snapshot's is InvalidBlockDeviceMapping (EC2 user guide, "Block device
# mappings"). Without any group the instance gets its VPC's default group;
# without a subnet, the default subnet of its zone (plain moto: EC2-Classic,
# a random 10.x address in no VPC).
_run_instances = InstanceBackend.run_instances


def _ami_root(backend, image_id):
    amis = backend.describe_images(filters={"image-id": image_id}) if image_id else []
    ami = amis[0] if amis else None
    if ami is None:
        return "/dev/sda1", {"VolumeSize": 8, "VolumeType": "gp2", "DeleteOnTermination": True, "Encrypted": False}
    ebs = dict(ami.block_device_mappings[0]["Ebs"])
    ebs.pop("SnapshotId", None)
    # An AMI's root volume goes with the instance unless the AMI says otherwise;
    # Debian's and Amazon's images say DeleteOnTermination=true.
    ebs["DeleteOnTermination"] = True
    ebs["VolumeType"] = "gp2" if ebs.get("VolumeType") in (None, "standard") else ebs["VolumeType"]
    ebs.setdefault("Encrypted", False)
    return ami.root_device_name, ebs


def _bool(v):
    return v is True or str(v).lower() == "true"


def _block_devices(backend, image_id, template_mappings):
    root, root_ebs = _ami_root(backend, image_id)
    snapshot_size = int(root_ebs["VolumeSize"])
    out = [{"DeviceName": root, "Ebs": root_ebs}]
    for m in template_mappings or []:
        ebs = m.get("Ebs") or {}
        if m.get("DeviceName") == root:
            if "VolumeSize" in ebs and int(ebs["VolumeSize"]) < snapshot_size:
                raise InvalidParameterValueError(
                    f"Volume of size {ebs['VolumeSize']}GB is smaller than snapshot, expect size >= {snapshot_size}GB"
                )
            merged = dict(root_ebs)
            merged.update({k: v for k, v in ebs.items() if v is not None})
            merged["Encrypted"] = _bool(merged.get("Encrypted"))
            merged["DeleteOnTermination"] = _bool(merged.get("DeleteOnTermination", True))
            out[0] = {"DeviceName": root, "Ebs": merged}
        elif ebs:
            e = dict(ebs)
            e["Encrypted"] = _bool(e.get("Encrypted"))
            e["DeleteOnTermination"] = _bool(e.get("DeleteOnTermination"))
            out.append({"DeviceName": m["DeviceName"], "Ebs": e})
    return out


def _run_instances_from_template(self, image_id, count, user_data, security_group_names, **kwargs):
    lt = kwargs.get("launch_template")
    if lt:
        data = self._get_template_from_args(lt).data
        image_id = image_id or data.get("ImageId")
        nics = kwargs.get("nics") or [dict(n) for n in data.get("NetworkInterfaces") or []]
        groups = list(kwargs.get("security_group_ids") or data.get("SecurityGroupIds") or [])
        names = list(security_group_names or data.get("SecurityGroups") or [])
        if nics and (groups or names):
            raise InvalidParameterCombination(
                "Network interfaces and an instance-level security groups may not be specified on the same request"
            )
        if nics:
            primary = next((n for n in nics if int(n.get("DeviceIndex", 0)) == 0), nics[0])
            if kwargs.get("subnet_id"):
                primary["SubnetId"] = kwargs.pop("subnet_id")
            if "AssociatePublicIpAddress" in primary:
                primary["AssociatePublicIpAddress"] = _bool(primary["AssociatePublicIpAddress"])
            kwargs["nics"] = nics
        kwargs["security_group_ids"] = groups
        security_group_names = names
        for key, param in (
            ("metadata_options", "MetadataOptions"),
            ("instance_initiated_shutdown_behavior", "InstanceInitiatedShutdownBehavior"),
            ("disable_api_termination", "DisableApiTermination"),
            ("disable_api_stop", "DisableApiStop"),
            ("ebs_optimized", "EbsOptimized"),
        ):
            if not kwargs.get(key) and data.get(param) is not None:
                kwargs[key] = data[param]
        if kwargs.get("disable_api_termination") is not None:
            kwargs["disable_api_termination"] = _bool(kwargs["disable_api_termination"])
        zone = (data.get("Placement") or {}).get("AvailabilityZone")
        if not kwargs.get("placement") and zone:
            kwargs["placement"] = zone
        if (data.get("InstanceMarketOptions") or {}).get("MarketType") == "spot":
            kwargs["instance_market_options"] = "spot"
        if "block_device_mappings" not in kwargs:
            kwargs["block_device_mappings"] = _block_devices(self, image_id, data.get("BlockDeviceMappings"))
    if not kwargs.get("subnet_id") and not kwargs.get("nics"):
        # Without a subnet AWS launches into the default subnet of the zone
        # (EC2 user guide, "Default VPCs"); plain moto falls back to EC2-Classic
        # with a random 10.x address outside any VPC.
        zone = kwargs.get("placement") or self.region_name + "a"
        default = self.get_default_subnets().get(zone)
        if default is not None:
            kwargs["subnet_id"] = default.id
            kwargs["placement"] = None
            if kwargs.get("associate_public_ip") is False:
                kwargs["associate_public_ip"] = None
    reservation = _run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
    for inst in reservation.instances:
        for nic in inst.nics.values():
            if not nic.group_set and nic.subnet is not None:
                group = self.get_default_security_group(nic.subnet.vpc_id)
                if group is not None:
                    nic.group_set.append(group)
        if not inst.security_groups and inst.nics:
            inst.security_groups = list(inst.nics[0].group_set)
    return reservation


InstanceBackend.run_instances = _run_instances_from_template


def _launch_from_spec(backend, spec, count, **extra):
    """Runs count instances from a fleet's launch spec (template + override)."""
    ov = spec.overrides or {}
    zone = ov.get("AvailabilityZone") or (ov.get("Placement") or {}).get("AvailabilityZone")
    return backend.run_instances(
        ov.get("ImageId") or spec.image_id,
        count,
        spec.user_data,
        [],
        instance_type=spec.instance_type,
        is_instance_type_default=False,
        key_name=spec.key_name,
        subnet_id=ov.get("SubnetId"),
        placement=None if ov.get("SubnetId") else zone,
        region_name=backend.region_name,
        launch_template=spec.launch_template_spec,
        associate_public_ip=None,
        tags=spec.tag_specifications,
        **extra,
    )


_spot_launch_instance = SpotInstanceRequest.launch_instance


def _spot_launch_from_template(self):
    spec = self.launch_spec
    if spec is None or not spec.launch_template_spec:
        return _spot_launch_instance(self)
    return _launch_from_spec(
        self.ec2_backend, spec, 1, spot_fleet_id=self.spot_fleet_id, lifecycle="spot"
    ).instances[0]


SpotInstanceRequest.launch_instance = _spot_launch_from_template

_fleet_on_demand = Fleet.create_on_demand_requests


def _fleet_on_demand_from_template(self, weight_to_add):
    if not all(s.launch_template_spec for s in self.launch_specs):
        return _fleet_on_demand(self, weight_to_add)
    weight_map, added_weight = self.get_launch_spec_counts(weight_to_add)
    for spec, count in weight_map.items():
        reservation = _launch_from_spec(self.ec2_backend, spec, count, fleet_id=self.id)
        for instance in reservation.instances:
            self.on_demand_instances.append({"id": reservation.id, "instance": instance, "launch_spec": spec})
    self.fulfilled_capacity += added_weight


Fleet.create_on_demand_requests = _fleet_on_demand_from_template

# 6. Instance addresses.
# Plain moto hands out each subnet's private addresses in order from its start
# (every test bed's first instance in a zone gets the same one) and public
# addresses at random from 54.214.0.0/16, a real range. AWS picks any free
# address of the subnet except the first four and the last, which it
# reserves (VPC user guide, "Subnet CIDR blocks"), and public addresses from
# Amazon's pool. The test bed routes each instance's addresses to its host
# (host_addresses.go), so they must be unique on this machine and no one's
# on the internet: private addresses are drawn at random in the subnet,
# skipping those a host of another test bed on this machine holds (every
# moto has the same default VPC, 172.31.0.0/16), and public ones from
# 198.18.0.0/15 (RFC 2544, never routed on the internet), in a /24 of their
# own per moto process.
_subnet_ip = Subnet.get_available_subnet_ip


def _routed_here():
    """The /32 destinations of this machine's main routing table: the
    addresses the test beds' hosts hold."""
    held = set()
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                p = line.split()
                if len(p) > 7 and p[7] == "FFFFFFFF":
                    # The kernel prints the address as a native-order u32.
                    held.add(str(ipaddress.ip_address(struct.pack("=I", int(p[1], 16)))))
    except (OSError, ValueError):
        pass
    return held


def _random_subnet_ip(self, instance):
    first = int(self.cidr.network_address) + 4
    last = int(self.cidr.broadcast_address) - 1
    held = _routed_here()
    for _ in range(256):
        ip = str(ipaddress.ip_address(random.randint(first, last)))
        if ip not in self._subnet_ips and ip not in held:
            self._subnet_ips[ip] = instance
            return ip
    return _subnet_ip(self, instance)


Subnet.get_available_subnet_ip = _random_subnet_ip

_public_lock = threading.Lock()
_public_block = int(ipaddress.ip_address("198.18.0.0")) + (os.getpid() % 512) * 256
_public_next = [random.randint(1, 254)]


def _testbed_public_ip():
    with _public_lock:
        n = _public_next[0]
        _public_next[0] = n % 254 + 1
    return str(ipaddress.ip_address(_public_block + n))


elastic_network_interfaces.random_public_ip = _testbed_public_ip
ec2_utils.random_public_ip = _testbed_public_ip

# 7. Booting.
# Plain moto puts a new instance in "running" at once. AWS keeps it "pending"
# while it boots ("Amazon EC2 instance state changes": pending, then running).
# The test bed holds it pending until its host accepts connections; the
# watcher then sends TestbedInstanceRunning, an action of the test bed only,
# straight to moto (the fault proxy refuses it like any unknown action).
_instance_init = Instance.__init__


def _instance_init_pending(self, *args, **kwargs):
    _instance_init(self, *args, **kwargs)
    self._state = InstanceState("pending", 0)


Instance.__init__ = _instance_init_pending


def _testbed_instance_running(self):
    instance_id = (self.querystring.get("InstanceId") or [""])[0]
    instance = self.ec2_backend.get_instance(instance_id)
    if instance.state == "pending":
        instance._state = InstanceState("running", 16)
    return (
        '<TestbedInstanceRunningResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<instanceId>{instance.id}</instanceId><state>{instance.state}</state>"
        "</TestbedInstanceRunningResponse>"
    )


EC2Response.testbed_instance_running = _testbed_instance_running


def _testbed_ping(self):
    # moto.go asks this to know the server on its port is its own child: the
    # port it picked may have been taken by another test bed in between.
    return f"<TestbedPingResponse><pid>{os.getpid()}</pid></TestbedPingResponse>"


EC2Response.testbed_ping = _testbed_ping
_parse_parameters = EC2Response.parse_parameters


def _parse_parameters_of_testbed_actions(self, request):
    # EC2's service model has no TestbedInstanceRunning: read it as a plain form.
    if self._get_action().startswith("Testbed"):
        self.params = {}
        return
    _parse_parameters(self, request)


EC2Response.parse_parameters = _parse_parameters_of_testbed_actions

# 8. Tags of launch templates.
# Plain moto answers DescribeLaunchTemplates with the tags the template had
# when it was created: CreateTags and DeleteTags on it are stored but never
# shown. AWS shows the template's current tags (CreateTags supports launch
# templates: EC2 API reference, CreateTags).
def _launch_template_tags(self):
    return self.get_tags()


LaunchTemplate.tags = property(_launch_template_tags, lambda self, value: None)



# 9. Why an instance ended.
# Plain moto gives every terminated or stopped instance the state reason
# Client.UserInitiatedShutdown, whoever ended it. AWS names the cause
# (EC2 API reference, StateReason): Server.SpotInstanceTermination when it
# takes a spot instance back (and the spot request's status says so, e.g.
# instance-terminated-no-capacity: "Spot request status"),
# Client.InstanceInitiatedShutdown when the instance powered itself off,
# Client.InternalError when a launch fails on the client's side (an EBS
# volume whose KMS key the caller may not use), Client.VolumeLimitExceeded,
# Server.InsufficientInstanceCapacity. TestbedEndInstance, an action of the
# test bed only (sent straight to moto by the watcher and the tests), ends an
# instance with a given reason, the way EC2 would.
STATE_REASON_MESSAGES = {
    "Server.SpotInstanceTermination": "Server.SpotInstanceTermination: Spot instance termination",
    "Server.SpotInstanceShutdown": "Server.SpotInstanceShutdown: Spot instance shutdown",
    "Client.InstanceInitiatedShutdown": "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
    "Client.UserInitiatedShutdown": "Client.UserInitiatedShutdown: User initiated shutdown",
    "Client.InternalError": "Client.InternalError: Client error on launch",
    "Client.VolumeLimitExceeded": "Client.VolumeLimitExceeded: Volume limit exceeded",
    "Server.InsufficientInstanceCapacity": "Server.InsufficientInstanceCapacity: Insufficient capacity to satisfy launch request",
}

SPOT_STATUS_MESSAGES = {
    "instance-terminated-no-capacity": "Spot Instance terminated due to no available capacity.",
    "instance-stopped-no-capacity": "Spot Instance stopped due to no available capacity.",
    "instance-terminated-by-price": "Spot Instance terminated because your maximum price is lower than the current Spot price.",
}


# EC2 gives an instance its state reason as it leaves running: no call sees
# it stopped or terminated without one (a spot instance ending without a
# reason reads as EC2's doing). moto's threaded server can answer
# DescribeInstances while another request changes the instance, reading the
# reason before the change and the state after it; EC2 answers each call
# from one consistent view. So moto serves one EC2 request at a time (each
# takes milliseconds), and stop and terminate take the reason EC2 gives
# instead of moto's Client.UserInitiatedShutdown.
_ec2_lock = threading.RLock()
_ec2_call_action = EC2Response.call_action


def _ec2_call_action_one_at_a_time(self):
    with _ec2_lock:
        return _ec2_call_action(self)


EC2Response.call_action = _ec2_call_action_one_at_a_time
_terminate_reasonless = Instance.terminate
_stop_reasonless = Instance.stop


def _ending(original):
    def end(self, reason=None):
        reason = reason or StateReason(
            STATE_REASON_MESSAGES["Client.UserInitiatedShutdown"], "Client.UserInitiatedShutdown"
        )
        self.state_reason = reason
        previous = original(self)
        self.state_reason = reason
        return previous

    return end


Instance.terminate = _ending(_terminate_reasonless)
Instance.stop = _ending(_stop_reasonless)


def end_instance(instance, code, stop=False, spot_status=""):
    """Stops or terminates the instance with the state reason EC2 gives."""
    reason = StateReason(STATE_REASON_MESSAGES.get(code, code), code)
    if stop:
        instance.stop(reason)
    else:
        instance.terminate(reason)
    instance._reason = "Service initiated" if code.startswith("Server.") else instance._reason
    if spot_status:
        for req in list(instance.ec2_backend.spot_instance_requests.values()):
            if getattr(req, "instance", None) is instance:
                req.state = "disabled" if stop else "closed"
                req._status_code = spot_status
                req.status_message = SPOT_STATUS_MESSAGES.get(spot_status, spot_status)


def _testbed_end_instance(self):
    q = self.querystring
    instance = self.ec2_backend.get_instance((q.get("InstanceId") or [""])[0])
    code = (q.get("Code") or ["Client.UserInitiatedShutdown"])[0]
    stop = (q.get("Behavior") or ["terminate"])[0] == "stop"
    spot_status = (q.get("SpotStatus") or [""])[0]
    end_instance(instance, code, stop=stop, spot_status=spot_status)
    return (
        '<TestbedEndInstanceResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<instanceId>{instance.id}</instanceId><state>{instance.state}</state>"
        "</TestbedEndInstanceResponse>"
    )


EC2Response.testbed_end_instance = _testbed_end_instance

# 10. Encrypted volumes under a KMS key.
# Plain moto launches an instance whatever KmsKeyId its volume names. AWS
# launches it (RunInstances and CreateFleet succeed), then terminates it
# during launch with state reason Client.InternalError when EBS cannot use
# the key: it does not exist, is disabled or pending deletion, or its policy
# does not let the caller create grants (EBS user guide, "Amazon EBS
# encryption"; EC2 troubleshooting, "Instance terminates immediately"). The
# test bed uses the key as moto's KMS knows it: unknown, disabled or pending
# deletion means the instance ends so.
_run_with_keys = InstanceBackend.run_instances


def _kms_key_usable(backend, ref):
    kms = kms_backends[backend.account_id][backend.region_name]
    try:
        key = kms.describe_key(ref)
    except Exception:  # noqa: BLE001 - any lookup failure is an unusable key
        return False
    if ref.startswith("arn:") and ":" + backend.region_name + ":" not in ref:
        return False
    return key.key_state == "Enabled"


def _run_instances_checking_keys(self, image_id, count, user_data, security_group_names, **kwargs):
    reservation = _run_with_keys(self, image_id, count, user_data, security_group_names, **kwargs)
    for inst in reservation.instances:
        keys = [getattr(self.get_volume(bd.volume_id), "kms_key_id", None) for bd in inst.block_device_mapping.values()]
        if any(k and not _kms_key_usable(self, k) for k in keys):
            # Ended a moment after the launch call answered, as on AWS (the
            # fleet launching it is not registered before then).
            _end_soon(inst, "Client.InternalError")
    return reservation


def _end_soon(inst, code, tries=20):
    def run():
        try:
            end_instance(inst, code)
        except Exception:  # noqa: BLE001 - the fleet is not registered yet
            if tries > 1:
                _end_soon(inst, code, tries - 1)
    t = threading.Timer(0.25, run)
    t.daemon = True
    t.start()


InstanceBackend.run_instances = _run_instances_checking_keys

# 11. Instant fleets are not listed.
# Plain moto lists every fleet in DescribeFleets. AWS leaves out fleets of
# type instant unless their ids are named (EC2 API reference, DescribeFleets:
# "If a fleet is of type instant, you must specify the fleet ID in the
# request, otherwise the fleet does not appear in the response"). The test
# bed's own clients (its watcher and leak checker, user agent
# app/nixos-sd-testbed) still see them all.
_describe_fleets = FleetsResponse.describe_fleets


def _describe_fleets_without_instant(self):
    result = _describe_fleets(self)
    if self._get_param("FleetIds", []) or "app/nixos-sd-testbed" in (self.headers.get("User-Agent") or ""):
        return result
    result.result["Fleets"] = [f for f in result.result["Fleets"] if f.fleet_type != "instant"]
    return result


FleetsResponse.describe_fleets = _describe_fleets_without_instant

# 12. Spot requests by instance.
# Plain moto refuses the instance-id filter of DescribeSpotInstanceRequests
# (FilterNotImplementedError). AWS supports it ("instance-id - The ID of the
# instance that fulfilled the request").
_spot_filter_value = SpotInstanceRequest.get_filter_value


def _spot_filter_value_with_instance(self, filter_name, method_name=None):
    if filter_name == "instance-id":
        return getattr(getattr(self, "instance", None), "id", None)
    return _spot_filter_value(self, filter_name, method_name)


SpotInstanceRequest.get_filter_value = _spot_filter_value_with_instance

# 13. Spot prices of real size.
# Plain moto answers every DescribeSpotPriceHistory with $0.00001 for every
# type and zone, stamped 2006, ignores AvailabilityZone, StartTime and
# EndTime, and names the product "Linux/UNIX (Amazon VPC)". AWS answers each
# type and zone's own price, a fraction of the on-demand price that moves
# over time (a new entry when it changes), within the window asked (with
# StartTime alone: the price in effect then, and later changes), for the
# product asked ("Linux/UNIX"). The test bed's price of a type in a zone at
# hour h is its on-demand price (the .large prices of builder/prices.go,
# scaled by size) times a fraction between 0.30 and 0.45 fixed per type and
# zone, moving up to 6% with the hour.
ON_DEMAND_LARGE = {
    "a1": 0.051, "c6g": 0.068, "c6gn": 0.0864, "c7g": 0.0725, "c7gn": 0.1248, "c8g": 0.07976,
    "m6g": 0.077, "m7g": 0.0816, "m8g": 0.08976, "r6g": 0.1008, "r7g": 0.1071, "r8g": 0.11782,
    "t4g": 0.0672,
}
SIZE_FACTOR = {"medium": 0.5, "large": 1, "xlarge": 2, "2xlarge": 4, "4xlarge": 8, "8xlarge": 16}


def _on_demand_price(instance_type):
    family, _, size = instance_type.partition(".")
    return ON_DEMAND_LARGE.get(family, 0.08) * SIZE_FACTOR.get(size, 4)


def testbed_spot_price(instance_type, zone, hour):
    seed = int(hashlib.sha256(f"{instance_type}/{zone}".encode()).hexdigest()[:8], 16)
    fraction = 0.30 + (seed % 1500) / 10000
    wave = 1 + 0.06 * math.sin(hour / 3 + seed % 7)
    return round(_on_demand_price(instance_type) * fraction * wave, 4)


def _timestamp(v):
    return v if isinstance(v, datetime) else parse_timestamp(str(v))


def _describe_spot_price_history_real(self):
    types_ = self._get_param("InstanceTypes", [])
    zone = self._get_param("AvailabilityZone")
    filters = self._filters_from_querystring()
    if zone:
        filters["availability-zone"] = [zone]
    products = self._get_param("ProductDescriptions", []) or ["Linux/UNIX"]
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = self._get_param("StartTime")
    end = self._get_param("EndTime")
    start = _timestamp(start) if start else now - timedelta(hours=6)
    end = _timestamp(end) if end else datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    first = start.replace(minute=0, second=0, microsecond=0)
    history = []
    for p in self.ec2_backend.describe_spot_price_history(types_, {k: v for k, v in filters.items() if k != "product-description"}):
        hour = first
        while hour <= end and hour <= now:
            for product in products:
                history.append({
                    "InstanceType": p["InstanceType"],
                    "ProductDescription": product,
                    "SpotPrice": f"{testbed_spot_price(p['InstanceType'], p['Location'], hour.timestamp() // 3600):.6f}",
                    "AvailabilityZone": p["Location"],
                    "Timestamp": hour.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                })
            hour += timedelta(hours=1)
    history.sort(key=lambda h: h["Timestamp"], reverse=True)
    return ActionResult({"SpotPriceHistory": history})


SpotInstancesResponse.describe_spot_price_history = _describe_spot_price_history_real

if __name__ == "__main__":
    main(sys.argv[1:])
