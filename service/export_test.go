package service

// ReadBytesHeld returns the read budget in use.
func ReadBytesHeld(s *Server) int64 { return s.reads.inUse() }

// IngestBytesHeld returns the ingest budget in use.
func IngestBytesHeld(s *Server) int64 { return s.ingest.inUse() }
