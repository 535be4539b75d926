/* version.h: the version of orch's wire contracts (REST API, agent protocol, bus messages).
 * Bump ORCH_PROTO_VERSION on any incompatible change to proto/. */
#pragma once

#define ORCH_PROTO_VERSION 1
#define ORCH_API_PREFIX    "/api/v1"

/* Job output (agent protocol `logs` reports and GET /api/v1/jobs/{id}/logs): a stream
 * offset, and the end of a chunk, are at most 2^53 - 1, exact in every JSON parser. */
#define ORCH_LOG_OFFSET_MAX ((long long)9007199254740991)
