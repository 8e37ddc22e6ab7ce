package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// Compile-time checks that Node and file offer what go-fuse dispatches on.
var (
	_ = (gofs.NodeWrapChilder)((*Node)(nil))
	_ = (gofs.NodeCreater)((*Node)(nil))
	_ = (gofs.NodeOpener)((*Node)(nil))
	_ = (gofs.NodeTmpfiler)((*Node)(nil))
	_ = (gofs.NodeMkdirer)((*Node)(nil))
	_ = (gofs.NodeMknoder)((*Node)(nil))
	_ = (gofs.NodeSymlinker)((*Node)(nil))
	_ = (gofs.NodeLinker)((*Node)(nil))
	_ = (gofs.NodeUnlinker)((*Node)(nil))
	_ = (gofs.NodeRmdirer)((*Node)(nil))
	_ = (gofs.NodeRenamer)((*Node)(nil))
	_ = (gofs.NodeFsyncer)((*Node)(nil))
	_ = (gofs.NodeSetattrer)((*Node)(nil))
	_ = (gofs.NodeSetxattrer)((*Node)(nil))
	_ = (gofs.NodeRemovexattrer)((*Node)(nil))
	_ = (gofs.NodeCopyFileRanger)((*Node)(nil))

	_ = (gofs.FileReader)((*file)(nil))
	_ = (gofs.FileWriter)((*file)(nil))
	_ = (gofs.FileWritever)((*file)(nil))
	_ = (gofs.FileFlusher)((*file)(nil))
	_ = (gofs.FileReleaser)((*file)(nil))
	_ = (gofs.FileFsyncer)((*file)(nil))
	_ = (gofs.FileGetattrer)((*file)(nil))
	_ = (gofs.FileStatxer)((*file)(nil))
	_ = (gofs.FileSetattrer)((*file)(nil))
	_ = (gofs.FileLseeker)((*file)(nil))
	_ = (gofs.FileAllocater)((*file)(nil))
)
