"""The slice of RunPod's GraphQL schema the emulator serves, and the checks a GraphQL server runs first.

Type and field names follow what the runpod SDK 1.12 and dstack's RunPod client send (their queries are the
evidence). A request is validated against this schema *before* anything runs, like a real GraphQL server:
an unknown field or a badly typed input never creates half a pod. Error texts follow graphql-js, which
RunPod's API answers with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.sandbox.emulator.graphql import EnumValue, Field, GraphQLInputError, Variable

SCALARS = {"String", "Int", "Float", "Boolean", "ID", "Void"}

ENUMS: dict[str, set[str]] = {
    "CloudTypeEnum": {"ALL", "SECURE", "COMMUNITY"},
    "PodType": {"RESERVED", "INTERRUPTABLE", "BID", "BACKGROUND"},
}

_POD_COMMON_INPUT = {
    "name": "String",
    "imageName": "String",
    "cloudType": "CloudTypeEnum",
    "startSsh": "Boolean",
    "startJupyter": "Boolean",
    "supportPublicIp": "Boolean",
    "dataCenterId": "String",
    "countryCode": "String",
    "containerDiskInGb": "Int",
    "volumeInGb": "Int",
    "dockerArgs": "String",
    "ports": "String",
    "volumeMountPath": "String",
    "env": "[EnvironmentVariableInput]",
    "templateId": "String",
    "networkVolumeId": "String",
    "containerRegistryAuthId": "String",
    "minDownload": "Int",
    "minUpload": "Int",
    "deployCost": "Float",
    "stopAfter": "String",
    "terminateAfter": "String",
}
_GPU_POD_INPUT = {
    **_POD_COMMON_INPUT,
    "gpuTypeId": "String!",
    "gpuTypeIdList": "[String]",
    "gpuCount": "Int",
    "minVcpuCount": "Int",
    "minMemoryInGb": "Int",
    "allowedCudaVersions": "[String]",
    "minCudaVersion": "String",
    "volumeKey": "String",
}

INPUT_TYPES: dict[str, dict[str, str]] = {
    "EnvironmentVariableInput": {"key": "String!", "value": "String!"},
    "PodFindAndDeployOnDemandInput": _GPU_POD_INPUT,
    "PodRentInterruptableInput": {**_GPU_POD_INPUT, "bidPerGpu": "Float!"},
    "DeployCpuPodInput": {**_POD_COMMON_INPUT, "instanceId": "String"},
    "PodFilter": {"podId": "String!"},
    "PodStopInput": {"podId": "String!", "incrementVersion": "Boolean"},
    "PodResumeInput": {"podId": "String!", "gpuCount": "Int", "syncMachine": "Boolean"},
    "PodBidResumeInput": {"podId": "String!", "bidPerGpu": "Float!", "gpuCount": "Int"},
    "PodTerminateInput": {"podId": "String!"},
    "GpuTypeFilter": {"id": "String", "ids": "[String]"},
    "GpuLowestPriceInput": {
        "gpuCount": "Int",
        "cloudType": "CloudTypeEnum",
        "secureCloud": "Boolean",
        "dataCenterId": "String",
        "countryCode": "String",
        "minDisk": "Int",
        "minMemoryInGb": "Int",
        "minVcpuCount": "Int",
        "minDownload": "Int",
        "minUpload": "Int",
        "supportPublicIp": "Boolean",
    },
    "CreateNetworkVolumeInput": {"name": "String!", "size": "Int!", "dataCenterId": "String!"},
    "DeleteNetworkVolumeInput": {"id": "String!"},
}


@dataclass(frozen=True)
class FieldDef:
    type: str
    args: dict[str, str] = field(default_factory=dict)


def _f(type_: str, **args: str) -> FieldDef:
    return FieldDef(type_, dict(args))


OUTPUT_TYPES: dict[str, dict[str, FieldDef]] = {
    "Query": {
        "myself": _f("User"),
        "pod": _f("Pod", input="PodFilter!"),
        "gpuTypes": _f("[GpuType]", input="GpuTypeFilter"),
        "dataCenters": _f("[DataCenter]"),
    },
    "Mutation": {
        "podFindAndDeployOnDemand": _f("Pod", input="PodFindAndDeployOnDemandInput"),
        "podRentInterruptable": _f("Pod", input="PodRentInterruptableInput!"),
        "deployCpuPod": _f("Pod", input="DeployCpuPodInput!"),
        "podStop": _f("Pod", input="PodStopInput!"),
        "podResume": _f("Pod", input="PodResumeInput!"),
        "podBidResume": _f("Pod", input="PodBidResumeInput!"),
        "podTerminate": _f("Void", input="PodTerminateInput!"),
        "createNetworkVolume": _f("NetworkVolume", input="CreateNetworkVolumeInput"),
        "deleteNetworkVolume": _f("Void", input="DeleteNetworkVolumeInput"),
    },
    "User": {
        "id": _f("String"),
        "email": _f("String"),
        "authId": _f("String"),
        "pubKey": _f("String"),
        "clientBalance": _f("Float"),
        "currentSpendPerHr": _f("Float"),
        "pods": _f("[Pod]"),
        "networkVolumes": _f("[NetworkVolume]"),
    },
    "NetworkVolume": {
        "id": _f("String"),
        "name": _f("String"),
        "size": _f("Int"),
        "dataCenterId": _f("String"),
        "dataCenter": _f("DataCenter"),
    },
    "DataCenter": {"id": _f("String"), "name": _f("String"), "location": _f("String")},
    "GpuType": {
        "id": _f("String"),
        "displayName": _f("String"),
        "manufacturer": _f("String"),
        "memoryInGb": _f("Int"),
        "cudaCores": _f("Int"),
        "maxGpuCount": _f("Int"),
        "secureCloud": _f("Boolean"),
        "communityCloud": _f("Boolean"),
        "securePrice": _f("Float"),
        "communityPrice": _f("Float"),
        "secureSpotPrice": _f("Float"),
        "communitySpotPrice": _f("Float"),
        "oneWeekPrice": _f("Float"),
        "oneMonthPrice": _f("Float"),
        "threeMonthPrice": _f("Float"),
        "lowestPrice": _f("LowestPrice", input="GpuLowestPriceInput"),
    },
    "LowestPrice": {
        "gpuName": _f("String"),
        "gpuTypeId": _f("String"),
        "minimumBidPrice": _f("Float"),
        "uninterruptablePrice": _f("Float"),
        "minMemory": _f("Int"),
        "minVcpu": _f("Int"),
        "stockStatus": _f("String"),
        "countryCode": _f("String"),
    },
    "Pod": {
        "id": _f("String"),
        "name": _f("String"),
        "imageName": _f("String"),
        "env": _f("[String]"),
        "machineId": _f("String"),
        "machine": _f("PodMachineInfo"),
        "desiredStatus": _f("String"),
        "lastStatusChange": _f("String"),
        "costPerHr": _f("Float"),
        "adjustedCostPerHr": _f("Float"),
        "containerDiskInGb": _f("Int"),
        "dockerArgs": _f("String"),
        "dockerId": _f("String"),
        "gpuCount": _f("Int"),
        "memoryInGb": _f("Int"),
        "vcpuCount": _f("Int"),
        "volumeInGb": _f("Int"),
        "volumeMountPath": _f("String"),
        "networkVolume": _f("NetworkVolume"),
        "podType": _f("String"),
        "interruptible": _f("Boolean"),
        "port": _f("Int"),
        "ports": _f("String"),
        "uptimeSeconds": _f("Int"),
        "clusterIp": _f("String"),
        "runtime": _f("PodRuntime"),
    },
    "PodMachineInfo": {
        "podHostId": _f("String"),
        "gpuDisplayName": _f("String"),
        "gpuTypeId": _f("String"),
        "dataCenterId": _f("String"),
        "location": _f("String"),
    },
    "PodRuntime": {
        "uptimeInSeconds": _f("Int"),
        "ports": _f("[PodRuntimePorts]"),
        "gpus": _f("[PodRuntimeGpus]"),
        "container": _f("PodRuntimeContainer"),
    },
    "PodRuntimePorts": {
        "ip": _f("String"),
        "isIpPublic": _f("Boolean"),
        "privatePort": _f("Int"),
        "publicPort": _f("Int"),
        "type": _f("String"),
    },
    "PodRuntimeGpus": {"id": _f("String"), "gpuUtilPercent": _f("Int"), "memoryUtilPercent": _f("Int")},
    "PodRuntimeContainer": {"cpuPercent": _f("Int"), "memoryPercent": _f("Int")},
}


def _named_type(type_ref: str) -> str:
    return type_ref.strip("[]!")


def validate_selections(parent_type: str, selections: list[Field]) -> None:
    """Refuse unknown fields, unknown arguments and missing sub-selections, as graphql-js validation does."""
    fields = OUTPUT_TYPES[parent_type]
    for selected in selections:
        if selected.name == "__typename":
            continue
        definition = fields.get(selected.name)
        if definition is None:
            raise GraphQLInputError(f'Cannot query field "{selected.name}" on type "{parent_type}".')
        for arg in selected.arguments:
            if arg not in definition.args:
                raise GraphQLInputError(f'Unknown argument "{arg}" on field "{parent_type}.{selected.name}".')
        for arg, arg_type in definition.args.items():
            if arg_type.endswith("!") and arg not in selected.arguments:
                raise GraphQLInputError(
                    f'Field "{selected.name}" argument "{arg}" of type "{arg_type}" is required, '
                    "but it was not provided."
                )
        named = _named_type(definition.type)
        if named in SCALARS:
            if selected.selections is not None:
                raise GraphQLInputError(
                    f'Field "{selected.name}" must not have a selection since type "{definition.type}" '
                    "has no subfields."
                )
        elif selected.selections is None:
            raise GraphQLInputError(
                f'Field "{selected.name}" of type "{definition.type}" must have a selection of subfields. '
                f'Did you mean "{selected.name} {{ ... }}"?'
            )
        else:
            validate_selections(named, selected.selections)


def _show(value: Any) -> str:
    if isinstance(value, EnumValue):
        return value.name
    if isinstance(value, str):
        # Short words are echoed to help the caller; long strings may be secrets, so only their length is.
        return f'"{value}"' if len(value) <= 16 else f"a string of {len(value)} characters"
    if value is True or value is False:
        return "true" if value else "false"
    return repr(value)


class ArgumentCoercer:
    """Turns argument literals and variables into plain Python values checked against their input types."""

    def __init__(self, variables: dict[str, Any], declared: dict[str, str]) -> None:
        self.variables = variables
        self.declared = declared

    def coerce(self, value: Any, type_ref: str, *, from_variable: bool = False) -> Any:
        if isinstance(value, Variable):
            if value.name not in self.declared:
                raise GraphQLInputError(f'Variable "${value.name}" is not defined.')
            if value.name not in self.variables:
                if self.declared[value.name].endswith("!"):
                    raise GraphQLInputError(
                        f'Variable "${value.name}" of required type "{self.declared[value.name]}" was not provided.'
                    )
                value = None
            else:
                value = self.variables[value.name]
            from_variable = True
        if value is None:
            if type_ref.endswith("!"):
                raise GraphQLInputError(f'Expected value of type "{type_ref}", found null.')
            return None
        base = type_ref[:-1] if type_ref.endswith("!") else type_ref
        if base.startswith("["):
            inner = base[1:-1]
            items = value if isinstance(value, list) else [value]  # GraphQL coerces one item to a list
            return [self.coerce(item, inner, from_variable=from_variable) for item in items]
        if base in ENUMS:
            name = value.name if isinstance(value, EnumValue) else value if from_variable else None
            if not isinstance(name, str) or name not in ENUMS[base]:
                raise GraphQLInputError(f'Value {_show(value)} does not exist in "{base}" enum.')
            return name
        if base in INPUT_TYPES:
            return self._coerce_object(value, base, from_variable)
        return _coerce_scalar(value, base)

    def _coerce_object(self, value: Any, type_name: str, from_variable: bool) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise GraphQLInputError(f'Expected value of type "{type_name}", found {_show(value)}.')
        fields = INPUT_TYPES[type_name]
        for key in value:
            if key not in fields:
                raise GraphQLInputError(f'Field "{key}" is not defined by type "{type_name}".')
        result: dict[str, Any] = {}
        for key, field_type in fields.items():
            if key not in value:
                if field_type.endswith("!"):
                    raise GraphQLInputError(
                        f'Field "{type_name}.{key}" of required type "{field_type}" was not provided.'
                    )
                continue
            result[key] = self.coerce(value[key], field_type, from_variable=from_variable)
        return result


def _coerce_scalar(value: Any, scalar: str) -> Any:
    is_bool = isinstance(value, bool)
    if scalar == "String":
        if not isinstance(value, str):
            raise GraphQLInputError(f"String cannot represent a non string value: {_show(value)}")
        return value
    if scalar == "ID":
        if is_bool or not isinstance(value, str | int):
            raise GraphQLInputError(f"ID cannot represent value: {_show(value)}")
        return str(value)
    if scalar == "Int":
        if is_bool or not isinstance(value, int):
            raise GraphQLInputError(f"Int cannot represent non-integer value: {_show(value)}")
        if not -(2**31) <= value < 2**31:
            raise GraphQLInputError(f"Int cannot represent non 32-bit signed integer value: {value}")
        return value
    if scalar == "Float":
        if is_bool or not isinstance(value, int | float):
            raise GraphQLInputError(f"Float cannot represent non numeric value: {_show(value)}")
        return float(value)
    if scalar == "Boolean":
        if not is_bool:
            raise GraphQLInputError(f"Boolean cannot represent a non boolean value: {_show(value)}")
        return value
    raise GraphQLInputError(f'Unknown type "{scalar}".')


def coerce_field_arguments(parent_type: str, selected: Field, coercer: ArgumentCoercer) -> dict[str, Any]:
    definition = OUTPUT_TYPES[parent_type][selected.name]
    return {
        name: coercer.coerce(selected.arguments[name], arg_type)
        for name, arg_type in definition.args.items()
        if name in selected.arguments
    }


def check_variable_types(declared: dict[str, str]) -> None:
    for name, type_ref in declared.items():
        named = _named_type(type_ref)
        if named not in SCALARS and named not in ENUMS and named not in INPUT_TYPES:
            raise GraphQLInputError(f'Unknown type "{named}" for variable "${name}".')
