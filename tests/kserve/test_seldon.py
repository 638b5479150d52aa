"""The seldon/ manifests: they pass as shipped, and each check rejects a manifest broken on purpose.

Seldon's CRDs are read from ../shared/seldon-crds (never copied); without them these tests fail and
name the folder. The rendering is the pinned `kubectl kustomize`, as for kserve/.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_kserve import ROOT, render, schema, seldon_schema, seldon_validate, tools
from deploy_kserve.seldon_v2_rules import expected_pipeline
from tests.kserve.conftest import failing, find


@pytest.fixture(scope="session")
def seldon_schemas() -> schema.Schemas:
    try:
        return seldon_schema.load()
    except schema.CrdsMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def seldon_rendered(kubectl: tools.Kubectl) -> dict[str, list[dict]]:
    return {v: render.render(seldon_schema.SELDON_DIR / v, kubectl) for v in seldon_validate.VERSIONS}


@pytest.fixture
def v1(seldon_rendered: dict[str, list[dict]]) -> list[dict]:
    return copy.deepcopy(seldon_rendered["v1"])


@pytest.fixture
def v2(seldon_rendered: dict[str, list[dict]]) -> list[dict]:
    return copy.deepcopy(seldon_rendered["v2"])


def problems(objects: list[dict], version: str, schemas: schema.Schemas) -> dict[str, list[str]]:
    return failing(seldon_validate.validate_objects(objects, version, schemas))


def graph(objects: list[dict]) -> dict:
    return find(objects, "SeldonDeployment")["spec"]["predictors"][0]["graph"]


def triton(objects: list[dict]) -> dict:
    return find(objects, "SeldonDeployment")["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]


def step(objects: list[dict], name: str) -> dict:
    return next(s for s in find(objects, "Pipeline")["spec"]["steps"] if s["name"] == name)


# ----- as shipped -------------------------------------------------------------------------------
def test_seldon_validator_passes_when_manifests_are_as_shipped(
    seldon_schemas: schema.Schemas, kubectl: tools.Kubectl
) -> None:
    out = io.StringIO()
    assert seldon_validate.run(sorted(seldon_validate.VERSIONS), seldon_schemas, kubectl, out) == 0, out.getvalue()
    text = out.getvalue()
    assert text.startswith("validation level: crd: Seldon Core v1.18.2 and 2 CRDs from ")
    assert "  ok   schema SeldonDeployment/tritonyard (crd)" in text
    assert "  ok   schema Pipeline/clo-jpeg (crd)" in text
    assert "FAIL" not in text


def test_seldon_renderings_reuse_the_kserve_pvc_and_uploader_when_kustomized(
    seldon_rendered: dict[str, list[dict]],
) -> None:
    kinds = {v: sorted(o["kind"] for o in objects) for v, objects in seldon_rendered.items()}
    assert kinds["v1"] == ["Job", "Namespace", "PersistentVolumeClaim", "Secret", "SeldonDeployment"]
    assert kinds["v2"] == ["Job", "Model", "Model", "Model", "Model", "Model", "Namespace"] + [
        "PersistentVolumeClaim",
        "Pipeline",
        "Server",
    ]
    v1 = seldon_rendered["v1"]
    assert graph(v1)["modelUri"] == "pvc://tritonyard-models/model_repository"
    assert triton(v1)["image"] == "registry.example.com/tritonyard/triton:24.10"
    assert all(o["metadata"]["namespace"] == "tritonyard" for o in v1 if o["kind"] != "Namespace")


def test_pipeline_mirrors_the_builder_ensemble_when_derived() -> None:
    steps, outputs = expected_pipeline("clo-jpeg", "gpu")
    assert [name for name, _ in steps] == [
        "image-decoder",
        "preprocessing-u8",
        "yolov8",
        "postprocessing-u8",
        "efficientnet-v2",
    ]
    assert dict(steps)["postprocessing-u8"] == [
        "image-decoder.outputs.decoded_image_3840_2160",
        "yolov8.outputs.yolo_detections",
    ]
    assert outputs == [
        "yolov8.outputs.yolo_detections",
        "postprocessing-u8.outputs.processed_image_384_384",
        "efficientnet-v2.outputs.estimated_oil_pct",
    ]


def test_seldon_repository_path_is_the_kserve_one_when_both_are_rendered(
    seldon_rendered: dict[str, list[dict]], rendered_overlays: dict[str, list[dict]]
) -> None:
    storage = find(rendered_overlays["gpu"], "InferenceService")["spec"]["predictor"]["model"]["storageUri"]
    assert graph(seldon_rendered["v1"])["modelUri"] == storage
    uris = [m["spec"]["storageUri"] for m in seldon_rendered["v2"] if m["kind"] == "Model"]
    assert all(u.startswith("/var/models/" + storage.split("/", 3)[3] + "/") for u in uris)


# ----- Seldon Core v1: schema -------------------------------------------------------------------
def test_schema_rejects_seldon_deployment_when_model_uri_is_misspelled(v1: list[dict], seldon_schemas) -> None:
    g = graph(v1)
    g["modelURI"] = g.pop("modelUri")
    found = problems(v1, "v1", seldon_schemas)
    assert found["schema SeldonDeployment/tritonyard (crd)"] == [
        "spec.predictors.0.graph: Additional properties are not allowed ('modelURI' was unexpected)"
    ]
    assert found["rule: protocol v2, one TRITON_SERVER node, modelUri on the PVC"] == [
        "graph.modelUri '' is not pvc://<claim>/<path>"
    ]


def test_schema_rejects_seldon_deployment_when_a_predictor_has_no_graph(v1: list[dict], seldon_schemas) -> None:
    find(v1, "SeldonDeployment")["spec"]["predictors"][0].pop("graph")
    found = problems(v1, "v1", seldon_schemas)
    assert found["schema SeldonDeployment/tritonyard (crd)"] == ["spec.predictors.0: 'graph' is a required property"]


# ----- Seldon Core v1: rules --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "rule", "message"),
    [
        (
            "protocol",
            "seldon",
            "protocol v2, one TRITON_SERVER node, modelUri on the PVC",
            "spec.protocol is 'seldon': Triton speaks the v2 protocol, set protocol: v2",
        ),
        (
            "implementation",
            "MLSERVER",
            "protocol v2, one TRITON_SERVER node, modelUri on the PVC",
            "graph.implementation is 'MLSERVER', not TRITON_SERVER",
        ),
        (
            "modelUri",
            "pvc://other-claim/model_repository",
            "protocol v2, one TRITON_SERVER node, modelUri on the PVC",
            "graph.modelUri claim 'other-claim' but the PersistentVolumeClaim(s) here are ['tritonyard-models']",
        ),
        (
            "httpPort",
            9001,
            "our image and args, on Seldon's ports",
            "--http-port must be 9001: Seldon exposes graph.endpoint.httpPort (9001) and overwrites the "
            "container's ports with it; args give ['9000']",
        ),
    ],
)
def test_seldon_v1_rules_reject_deployment_when_one_field_is_wrong(
    v1: list[dict], seldon_schemas: schema.Schemas, path: str, value: object, rule: str, message: str
) -> None:
    sdep = find(v1, "SeldonDeployment")
    target = {"protocol": sdep["spec"], "httpPort": graph(v1)["endpoint"]}.get(path, graph(v1))
    target[path] = value
    found = problems(v1, "v1", seldon_schemas)
    assert not [name for name in found if name.startswith("schema")], found  # the CRD allows each of these
    assert message in found[f"rule: {rule}"]


def test_seldon_v1_rules_reject_container_when_args_are_left_to_seldon(v1: list[dict], seldon_schemas) -> None:
    triton(v1).pop("args")
    found = problems(v1, "v1", seldon_schemas)
    assert found["rule: our image and args, on Seldon's ports"][0].startswith(
        "args must start with tritonserver: without args Seldon runs its defaults (every model"
    )
    assert "rule: model-repository API restricted, key from a Secret" in found
    assert "rule: --load-model lines == builders.catalog.model_names()" in found


def test_seldon_v1_rules_name_the_seldon_file_when_a_model_is_not_loaded(v1: list[dict], seldon_schemas) -> None:
    triton(v1)["args"].remove("--load-model=gpt2_stream")
    found = problems(v1, "v1", seldon_schemas)
    (message,) = found["rule: --load-model lines == builders.catalog.model_names()"]
    assert "add to the triton container's args in seldon/v1/seldondeployment.yaml" in message
    assert message.endswith("- --load-model=gpt2_stream")


def test_seldon_v1_rules_reject_scraping_when_it_points_at_the_executor(v1: list[dict], seldon_schemas) -> None:
    notes = find(v1, "SeldonDeployment")["spec"]["predictors"][0]["componentSpecs"][0]["metadata"]["annotations"]
    notes["prometheus.io/path"] = "/prometheus"
    assert problems(v1, "v1", seldon_schemas) == {
        "rule: Prometheus scrapes Triton's metrics port": [
            'componentSpecs metadata.annotations["prometheus.io/path"] must be "/metrics" (Triton\'s metrics), '
            "not '/prometheus'"
        ]
    }


def test_seldon_v1_rules_reject_gpu_when_it_is_a_fraction(v1: list[dict], seldon_schemas) -> None:
    triton(v1)["resources"]["limits"]["nvidia.com/gpu"] = "0.5"
    found = problems(v1, "v1", seldon_schemas)
    assert found["rule: GPU limits are whole GPUs"] == [
        "SeldonDeployment spec.predictors[0].componentSpecs[0].spec.containers[0].resources.limits.nvidia.com/gpu "
        "is '0.5': GPUs are whole, a positive integer"
    ]


# ----- Seldon Core 2: schema and rules ----------------------------------------------------------
def test_schema_rejects_model_when_storage_uri_is_missing(v2: list[dict], seldon_schemas) -> None:
    find(v2, "Model", "yolov8")["spec"].pop("storageUri")
    found = problems(v2, "v2", seldon_schemas)
    assert found["schema Model/yolov8 (crd)"] == ["spec: 'storageUri' is a required property"]
    assert found["rule: Models == the steps of ensemble_jpeg, from the PVC"] == [
        "Model yolov8: storageUri None must be '/var/models/model_repository/yolov8'"
    ]


def test_schema_rejects_pipeline_when_join_type_is_unknown(v2: list[dict], seldon_schemas) -> None:
    step(v2, "postprocessing-u8")["inputsJoinType"] = "left"
    assert problems(v2, "v2", seldon_schemas) == {
        "schema Pipeline/clo-jpeg (crd)": [
            "spec.steps.3.inputsJoinType: 'left' is not one of ['inner', 'outer', 'any']"
        ]
    }


def test_seldon_v2_rules_reject_a_model_for_the_ensemble_naming_the_renaming(v2: list[dict], seldon_schemas) -> None:
    extra = copy.deepcopy(find(v2, "Model", "yolov8"))
    extra["metadata"]["name"] = "ensemble-jpeg"
    extra["spec"]["storageUri"] = "/var/models/model_repository/ensemble_jpeg"
    found = problems([*v2, extra], "v2", seldon_schemas)
    assert found == {
        "rule: Models == the steps of ensemble_jpeg, from the PVC": [
            "Model ensemble-jpeg: Seldon Core 2 loads each Model as <name>_<version>, so the steps this ensemble "
            "names are not in Triton; the Pipeline replaces it"
        ]
    }


def test_seldon_v2_rules_reject_pipeline_when_a_step_reads_the_wrong_tensor(v2: list[dict], seldon_schemas) -> None:
    step(v2, "yolov8")["inputs"] = ["clo-jpeg.inputs.image_bytes"]
    assert problems(v2, "v2", seldon_schemas) == {
        "rule: Pipeline == ensemble_jpeg's steps and wiring": [
            "step yolov8: inputs ['clo-jpeg.inputs.image_bytes'] must be "
            "['preprocessing-u8.outputs.preprocessed_640_640_image'] (as in ensemble_jpeg)"
        ]
    }


def test_seldon_v2_rules_reject_pipeline_when_a_step_is_missing(v2: list[dict], seldon_schemas) -> None:
    spec = find(v2, "Pipeline")["spec"]
    spec["steps"] = [s for s in spec["steps"] if s["name"] != "preprocessing-u8"]
    (message,) = problems(v2, "v2", seldon_schemas)["rule: Pipeline == ensemble_jpeg's steps and wiring"]
    assert message.startswith("Pipeline clo-jpeg steps ['image-decoder', 'yolov8', ")


def test_seldon_v2_rules_reject_server_when_it_lacks_the_pvc_and_capability(v2: list[dict], seldon_schemas) -> None:
    spec = find(v2, "Server")["spec"]
    spec["extraCapabilities"] = []
    spec["podSpec"]["containers"] = [c for c in spec["podSpec"]["containers"] if c["name"] != "rclone"]
    found = problems(v2, "v2", seldon_schemas)
    assert found["rule: Server: triton config, our image, GPU, PVC read-only, /dev/shm"] == [
        "extraCapabilities must include 'tritonyard': only this Server has our Python packages"
    ]
    assert found["rule: Models == the steps of ensemble_jpeg, from the PVC"] == [
        "the Server's podSpec has no 'rclone' container (the ServerConfig's names it)"
    ]


def test_seldon_v2_rules_reject_model_when_it_lacks_the_backend_capability(v2: list[dict], seldon_schemas) -> None:
    find(v2, "Model", "image-decoder")["spec"]["requirements"] = ["tritonyard"]
    assert problems(v2, "v2", seldon_schemas) == {
        "rule: Models == the steps of ensemble_jpeg, from the PVC": [
            "Model image-decoder: requirements must include ['python', 'tritonyard']"
        ]
    }


# ----- the command line -------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy_kserve.seldon_validate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_seldon_cli_exits_1_listing_the_problem_when_a_manifest_is_broken(tmp_path: Path, kubectl) -> None:
    copy_root = tmp_path / "project"
    shutil.copytree(seldon_schema.SELDON_DIR, copy_root / "seldon")
    shutil.copytree(ROOT / "kserve", copy_root / "kserve")
    sdep = copy_root / "seldon" / "v1" / "seldondeployment.yaml"
    sdep.write_text(sdep.read_text().replace("protocol: v2", "protocol: seldon"))
    out = io.StringIO()
    status = seldon_validate.run(["v1"], seldon_schema.load(), kubectl, out, copy_root / "seldon")
    assert status == 1
    assert "       - spec.protocol is 'seldon': Triton speaks the v2 protocol, set protocol: v2" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "FAILED: 1 failing check(s); validation level crd"


def test_seldon_cli_exits_2_naming_the_path_when_the_crd_folder_is_absent(tmp_path: Path) -> None:
    done = run_cli("--crds", str(tmp_path / "seldon-crds"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"kserve-validate: Seldon's CRDs are not at {tmp_path / 'seldon-crds'} (missing ")
