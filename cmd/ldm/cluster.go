package main

import (
	"fmt"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

func newClusterCommand() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change the membership of a replicated cluster",
		Long: `cluster talks to any member of a cluster (--server); changes are carried
out by the leader.

  ldm cluster status                  the leader and how many members are alive
  ldm cluster members                 every member: id, address, leader, voter, status
  ldm cluster remove ID               remove a member (a failed node stays a voter until removed)
  ldm cluster transfer-leader [ID]    hand leadership to ID (or to any voter)
  ldm cluster leave                   take the server at --server out of the cluster`,
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newClusterStatusCommand(cf), newClusterMembersCommand(cf), newClusterRemoveCommand(cf), newClusterTransferCommand(cf), newClusterLeaveCommand(cf))
	return cmd
}

func getServers(cmd *cobra.Command, cf *clientFlags) ([]*ldmv1.Server, error) {
	var servers []*ldmv1.Server
	err := cf.with(cmd.Context(), func(c *clients) error {
		res, err := c.cluster.GetServers(cmd.Context(), connect.NewRequest(&ldmv1.GetServersRequest{}))
		if err != nil {
			return c.rpcError("get servers", err)
		}
		servers = res.Msg.GetServers()
		return nil
	})
	return servers, err
}

func newClusterStatusCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the leader and how many members are alive",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			servers, err := getServers(cmd, cf)
			if err != nil {
				return err
			}
			leader := "none (an election is in progress, or a majority is unreachable)"
			voters, alive := 0, 0
			for _, s := range servers {
				if s.GetIsLeader() {
					leader = fmt.Sprintf("%s at %s", s.GetId(), s.GetRpcAddr())
				}
				if s.GetVoter() {
					voters++
				}
				if s.GetStatus() == "alive" {
					alive++
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "leader:  %s\n", leader)
			fmt.Fprintf(out, "members: %d (%d voters, %d alive)\n", len(servers), voters, alive)
			if voters > 0 {
				fmt.Fprintf(out, "quorum:  %d of %d voters\n", voters/2+1, voters)
			}
			return nil
		},
	}
}

func newClusterMembersCommand(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List every member with its address, role and gossip status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			servers, err := getServers(cmd, cf)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), &ldmv1.GetServersResponse{Servers: servers})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tADDRESS\tLEADER\tVOTER\tSTATUS")
			for _, s := range servers {
				fmt.Fprintf(w, "%s\t%s\t%t\t%t\t%s\n", s.GetId(), s.GetRpcAddr(), s.GetIsLeader(), s.GetVoter(), s.GetStatus())
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newClusterRemoveCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member from the cluster (for a node that failed for good)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				if _, err := c.cluster.RemoveServer(cmd.Context(), connect.NewRequest(&ldmv1.RemoveServerRequest{Id: args[0]})); err != nil {
					return c.rpcError("remove server "+args[0], err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "removed %s\n", args[0])
				return nil
			})
		},
	}
}

func newClusterTransferCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Hand leadership to another voter (any voter without ID)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.cluster.TransferLeader(cmd.Context(), connect.NewRequest(&ldmv1.TransferLeaderRequest{Id: id}))
				if err != nil {
					return c.rpcError("transfer leadership", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "leader: %s\n", res.Msg.GetLeaderId())
				return nil
			})
		},
	}
}

func newClusterLeaveCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Take the server at --server out of the cluster for good (a scale-down)",
		Long: `leave takes the server that --server names out of the cluster: if it leads,
it hands leadership to another voter first; then the leader removes it from
the Raft configuration, and it leaves the gossip pool. Run it on the node
that goes away, before stopping it (a Kubernetes preStop hook:
ldm cluster leave --server https://127.0.0.1:8443 ...). The process keeps
serving until it is stopped; started again, the node is added back by the
leader. Running it again on a node that left succeeds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.cluster.Leave(cmd.Context(), connect.NewRequest(&ldmv1.LeaveRequest{}))
				if err != nil {
					return c.rpcError("leave the cluster", err)
				}
				leader := res.Msg.GetLeaderId()
				if leader == "" {
					leader = "unknown"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s left the cluster (leader: %s)\n", res.Msg.GetId(), leader)
				return nil
			})
		},
	}
}
