"""The emulator's GraphQL reader and schema: it reads what the SDK sends and refuses what RunPod would."""

from __future__ import annotations

import pytest
from runpod.api.mutations import pods as sdk_pod_mutations
from runpod.api.queries import gpus as sdk_gpu_queries
from runpod.api.queries import pods as sdk_pod_queries
from runpod.api.queries import user as sdk_user_queries

from jobs.sandbox.emulator.graphql import EnumValue, GraphQLInputError, GraphQLSyntaxError, Variable, parse
from jobs.sandbox.emulator.schema import ArgumentCoercer, coerce_field_arguments, validate_selections

SDK_DOCUMENTS = {
    "get_pods": sdk_pod_queries.QUERY_POD,
    "get_pod": sdk_pod_queries.generate_pod_query("abc"),
    "get_gpus": sdk_gpu_queries.QUERY_GPU_TYPES,
    "get_gpu": sdk_gpu_queries.generate_gpu_query("NVIDIA GeForce RTX 4090", 2),
    "get_user": sdk_user_queries.QUERY_USER,
    "create_gpu_pod": sdk_pod_mutations.generate_pod_deployment_mutation(
        "n",
        "img",
        "NVIDIA GeForce RTX 4090",
        "SECURE",
        gpu_count=1,
        network_volume_id="v1",
        env={"A": "b c"},
        ports="8888/http, 22/tcp",
        allowed_cuda_versions=["12.4"],
        docker_args="sh -c 'echo hi'",
    ),
    "create_cpu_pod": sdk_pod_mutations.generate_pod_deployment_mutation("n", "img", instance_id="cpu3c-2-4"),
    "stop_pod": sdk_pod_mutations.generate_pod_stop_mutation("abc"),
    "resume_pod": sdk_pod_mutations.generate_pod_resume_mutation("abc", 1),
    "terminate_pod": sdk_pod_mutations.generate_pod_terminate_mutation("abc"),
}


@pytest.mark.parametrize("name", sorted(SDK_DOCUMENTS))
def test_every_document_the_sdk_builds_parses_and_validates(name: str) -> None:
    operation = parse(SDK_DOCUMENTS[name])
    root = "Mutation" if operation.kind == "mutation" else "Query"
    validate_selections(root, operation.selections)
    coercer = ArgumentCoercer({}, operation.variable_types)
    for selected in operation.selections:
        coerce_field_arguments(root, selected, coercer)


def test_the_sdks_create_pod_input_reads_back_as_sent() -> None:
    operation = parse(SDK_DOCUMENTS["create_gpu_pod"])
    (field,) = operation.selections
    spec = coerce_field_arguments("Mutation", field, ArgumentCoercer({}, {}))["input"]
    assert spec["cloudType"] == "SECURE"
    assert spec["env"] == [{"key": "A", "value": "b c"}]
    assert spec["ports"] == "8888/http,22/tcp"
    assert spec["dataCenterId"] is None
    assert spec["dockerArgs"] == "sh -c 'echo hi'"
    assert [f.name for f in field.selections or []] == ["id", "imageName", "env", "machineId", "machine"]


def test_values_aliases_escapes_and_variables() -> None:
    operation = parse(
        'query Q($id: String!) { a: pod(input: {podId: $id}) { id } gpuTypes(input: {id: "x\\"y\\u00e9"}) '
        "{ lowestPrice(input: {gpuCount: 2, secureCloud: true}) { minimumBidPrice } } }"
    )
    assert (operation.kind, operation.name, operation.variable_types) == ("query", "Q", {"id": "String!"})
    pod, gpus = operation.selections
    assert (pod.alias, pod.name, pod.arguments) == ("a", "pod", {"input": {"podId": Variable("id")}})
    assert gpus.arguments == {"input": {"id": 'x"yé'}}
    assert parse("mutation { podStop(input: {podId: null}) { id } }").selections[0].arguments == {
        "input": {"podId": None}
    }
    assert parse("{ x(a: ALL, b: -1.5e3, c: [1, 2]) }").selections[0].arguments == {
        "a": EnumValue("ALL"),
        "b": -1500.0,
        "c": [1, 2],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ myself { pods { id } }", "Syntax Error: Expected Name, found <EOF>."),
        # what the SDK builds from docker_args='python3 -c "print(1)"' (it doesn't escape quotes)
        ('mutation { podStop(input: {dockerArgs: "python3 -c "print(1)""}) { id } }', 'Syntax Error: Expected ":"'),
        ("{ myself { ...PodFields } }", "Syntax Error: fragments are not supported by the emulator."),
        ("subscription { pods { id } }", 'Syntax Error: Unexpected Name "subscription"'),
        ('{ pod(input: {podId: "unterminated}) { id } }', "Syntax Error: Unterminated string."),
    ],
)
def test_syntax_errors_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(GraphQLSyntaxError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "variables", "message"),
    [
        ("{ pod(input: {podId: $id}) { id } }", {}, 'Variable "$id" is not defined.'),
        ("query($id: String!) { pod(input: {podId: $id}) { id } }", {}, 'Variable "$id" of required type'),
        ('{ pod(input: {podId: "a", extra: 1}) { id } }', {}, 'Field "extra" is not defined by type "PodFilter".'),
        ("{ pod(input: {podId: 5}) { id } }", {}, "String cannot represent a non string value: 5"),
        ("{ pod(input: {}) { id } }", {}, 'Field "PodFilter.podId" of required type "String!" was not provided.'),
        (
            "mutation($i: PodRentInterruptableInput!) { podRentInterruptable(input: $i) { id } }",
            {"i": {"gpuTypeId": "g", "bidPerGpu": "cheap"}},
            'Float cannot represent non numeric value: "cheap"',
        ),
        (
            "mutation($i: PodRentInterruptableInput!) { podRentInterruptable(input: $i) { id } }",
            {"i": {"gpuTypeId": "g", "bidPerGpu": 0.3, "cloudType": "CHEAP"}},
            'Value "CHEAP" does not exist in "CloudTypeEnum" enum.',
        ),
    ],
)
def test_badly_typed_arguments_are_refused(text: str, variables: dict[str, object], message: str) -> None:
    operation = parse(text)
    root = "Mutation" if operation.kind == "mutation" else "Query"
    coercer = ArgumentCoercer(variables, operation.variable_types)
    with pytest.raises(GraphQLInputError) as caught:
        for selected in operation.selections:
            coerce_field_arguments(root, selected, coercer)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ myself { pods { id costPerMinute } } }", 'Cannot query field "costPerMinute" on type "Pod".'),
        ("{ myself { pods } }", 'Field "pods" of type "[Pod]" must have a selection of subfields.'),
        ("{ myself { id { x } } }", 'Field "id" must not have a selection since type "String" has no subfields.'),
        ('{ myself(input: {id: "x"}) { id } }', 'Unknown argument "input" on field "Query.myself".'),
        ("{ pod { id } }", 'Field "pod" argument "input" of type "PodFilter!" is required'),
    ],
)
def test_selections_are_validated_against_the_schema(text: str, message: str) -> None:
    with pytest.raises(GraphQLInputError) as caught:
        validate_selections("Query", parse(text).selections)
    assert str(caught.value).startswith(message)


def test_error_texts_never_echo_long_strings_that_may_be_secrets() -> None:
    token = "hf_" + "S3cr3tT0k3n" * 3
    broken = 'mutation { podStop(input: {env: [{key: "HF_TOKEN", value: "' + token + '"x"}]}) { id } }'
    with pytest.raises(GraphQLSyntaxError) as syntax:
        parse(broken)
    coercer = ArgumentCoercer({"i": {"gpuTypeId": "g", "bidPerGpu": token}}, {"i": "PodRentInterruptableInput!"})
    with pytest.raises(GraphQLInputError) as typed:
        coercer.coerce(Variable("i"), "PodRentInterruptableInput!")
    assert token not in str(syntax.value) and "S3cr3t" not in str(syntax.value)
    assert str(typed.value) == f"Float cannot represent non numeric value: a string of {len(token)} characters"
