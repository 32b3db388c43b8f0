//! ServiceExport → broker → ServiceImport and EndpointSlices (see `docs/services.md`): to be built.
