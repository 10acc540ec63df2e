// ES module entry: the same objects as index.js.
import moat from './index.js'

export const {
  Sandbox,
  SandboxHandle,
  ExecOutput,
  ExecHandle,
  ExecSink,
  SandboxFs,
  FsReadStream,
  FsWriteSink,
  MetricsStream,
  AgentClient,
  ExecOptionsBuilder,
  imageList,
  imageGet,
  imageInspect,
  imageRemove,
  imageGc,
  MoatError,
  NotSupportedError,
  InvalidArgumentError,
  NotFoundError,
  NotRunningError,
  ExecFailedError,
  ConnectionError,
} = moat
export default moat
