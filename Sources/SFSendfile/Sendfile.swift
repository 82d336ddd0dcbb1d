// sendfile(2) and zero-copy send on sf_buf (issue 4; written by its owner).
import SFBufHost
