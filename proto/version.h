/* version.h: the version of orch's wire contracts (REST API, agent protocol, bus messages).
 * Bump ORCH_PROTO_VERSION on any incompatible change to proto/. */
#pragma once

#define ORCH_PROTO_VERSION 1
#define ORCH_API_PREFIX    "/api/v1"
