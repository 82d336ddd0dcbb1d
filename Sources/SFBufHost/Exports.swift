// One import is enough: the core's public types (SFBufError, SFBufFlags, SFBufStats,
// SFBufReclaimPolicy) are part of the host's API.

@_exported import SFBufCore
