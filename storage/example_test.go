package storage_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/xcheng85/go-ldm/storage"
)

func Example() {
	dir, err := os.MkdirTemp("", "ldm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := storage.Open(dir, storage.Config{}) // group commit, 1 GiB blocks
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	_, err = s.CreateVolume(ctx, storage.VolumeMeta{
		Name: "brain-ct", Shape: storage.Shape{X: 512, Y: 512, Z: 300}, DataType: storage.Uint16,
	})
	if err != nil {
		log.Fatal(err)
	}
	key := storage.BrickKey{LOD: 0, X: 1, Y: 2, Z: 3}
	first, err := s.Append(ctx, "brain-ct",
		storage.Tile{Value: []byte("first brick bytes"), HasKey: true, Key: key},
		storage.Tile{Value: []byte("a tile without a key")},
	)
	if err != nil {
		log.Fatal(err)
	}
	tile, err := s.Read("brain-ct", first+1)
	if err != nil {
		log.Fatal(err)
	}
	brick, err := s.Brick("brain-ct", key)
	if err != nil {
		log.Fatal(err)
	}
	info, _ := s.Volume("brain-ct")
	fmt.Printf("first offset %d, next offset %d\n", first, info.NextOffset)
	fmt.Printf("offset %d: %s\n", tile.Offset, tile.Value)
	fmt.Printf("brick %v at offset %d: %s\n", key, brick.Offset, brick.Value)
	// Output:
	// first offset 0, next offset 2
	// offset 1: a tile without a key
	// brick {0 1 2 3} at offset 0: first brick bytes
}
