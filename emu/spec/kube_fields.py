"""The field names of the Kubernetes objects emu reads, and which of them mean something here.

A field Kubernetes knows but emu cannot emulate (probes, resources, images, ...) is accepted and reported once
as ignored; a field Kubernetes does not know is a misspelling and an error.
"""

OBJECT_META = {
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
}
OBJECT_META_USED = {"name", "namespace", "labels", "annotations"}

POD_SPEC = {
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "containers",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "imagePullSecrets",
    "initContainers",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
}
POD_SPEC_USED = {
    "containers",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "hostNetwork",
    "hostname",
    "nodeName",
    "shareProcessNamespace",
    "subdomain",
    "topologySpreadConstraints",
    "volumes",
}
SPREAD_CONSTRAINT = {
    "labelSelector",
    "matchLabelKeys",
    "maxSkew",
    "minDomains",
    "nodeAffinityPolicy",
    "nodeTaintsPolicy",
    "topologyKey",
    "whenUnsatisfiable",
}
SPREAD_CONSTRAINT_USED = {"labelSelector", "maxSkew", "topologyKey", "whenUnsatisfiable"}
HOSTNAME_KEY = "kubernetes.io/hostname"
DNS_CONFIG = {"nameservers", "searches", "options"}
DNS_CONFIG_OPTION = {"name", "value"}

CONTAINER = {
    "args",
    "command",
    "env",
    "envFrom",
    "image",
    "imagePullPolicy",
    "lifecycle",
    "livenessProbe",
    "name",
    "ports",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "securityContext",
    "startupProbe",
    "stdin",
    "stdinOnce",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
    "volumeDevices",
    "volumeMounts",
    "workingDir",
}
CONTAINER_USED = {"args", "command", "env", "image", "name", "ports", "volumeMounts", "workingDir"}

CONTAINER_PORT = {"containerPort", "hostIP", "hostPort", "name", "protocol"}
CONTAINER_PORT_USED = {"containerPort", "name", "protocol"}

ENV_VAR = {"name", "value", "valueFrom"}
VOLUME_MOUNT = {"mountPath", "mountPropagation", "name", "readOnly", "recursiveReadOnly", "subPath", "subPathExpr"}
VOLUME_MOUNT_USED = {"mountPath", "name", "readOnly"}

VOLUME_SOURCES = {
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
}

WORKLOAD_SPEC = {
    "replicas",
    "selector",
    "template",
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "paused",
    "serviceName",
    "podManagementPolicy",
    "updateStrategy",
    "volumeClaimTemplates",
    "persistentVolumeClaimRetentionPolicy",
    "ordinals",
}
WORKLOAD_SPEC_USED = {"replicas", "selector", "template", "serviceName"}
POD_TEMPLATE = {"metadata", "spec"}
LABEL_SELECTOR = {"matchLabels", "matchExpressions"}

SERVICE_SPEC = {
    "allocateLoadBalancerNodePorts",
    "clusterIP",
    "clusterIPs",
    "externalIPs",
    "externalName",
    "externalTrafficPolicy",
    "healthCheckNodePort",
    "internalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerClass",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "ports",
    "publishNotReadyAddresses",
    "selector",
    "sessionAffinity",
    "sessionAffinityConfig",
    "type",
    "trafficDistribution",
}
SERVICE_SPEC_USED = {
    "clusterIP",
    "clusterIPs",
    "externalName",
    "ports",
    "selector",
    "sessionAffinity",
    "sessionAffinityConfig",
    "type",
}
SERVICE_PORT = {"appProtocol", "name", "nodePort", "port", "protocol", "targetPort"}

TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}

# Workload kinds whose pod template emu expands into pods.
WORKLOAD_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"}
# Kinds that are legal in a manifest but have nothing to emulate: accepted with a notice. (NetworkPolicy and
# Namespace are read by the networkPolicy add-on: emu.registry.addon_kinds.)
IGNORED_KINDS = {
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Ingress",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Job",
    "CronJob",
    "StorageClass",
    "LimitRange",
    "ResourceQuota",
    "EndpointSlice",
    "Endpoints",
    "CustomResourceDefinition",
}

# The apiVersion each kind emu reads must carry (kubectl would refuse another). Ignored kinds are not checked.
API_VERSIONS = {
    "Pod": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "List": "v1",
}
